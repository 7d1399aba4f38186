rule download_archive:
    output:
        archive=ARCHIVE,
    params:
        url=config["data_url"],
        md5=config["data_md5"],
    log:
        "logs/download_archive.log",
    script:
        "../scripts/download_archive.py"


rule prepare_data:
    input:
        archive=rules.download_archive.output.archive,
    output:
        arrays=ARRAYS,
        stats=STATS,
    params:
        md5=config["data_md5"],
        url=config["data_url"],
        layout={k: config[k] for k in ("train_records", "test_records", "val_size", "split_seed")},
    log:
        "logs/prepare_data.log",
    script:
        "../scripts/prepare_data.py"
