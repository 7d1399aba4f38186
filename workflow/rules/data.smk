rule download_archive:
    output:
        archive=ARCHIVE,
    log:
        "logs/download_archive.log",
    benchmark:
        "benchmarks/download_archive.tsv"
    conda:
        ENVIRONMENT
    params:
        url=config["data_url"],
        md5=config["data_md5"],
    script:
        "../scripts/download_archive.py"


rule prepare_data:
    input:
        archive=rules.download_archive.output.archive,
    output:
        arrays=ARRAYS,
        stats=STATS,
    log:
        "logs/prepare_data.log",
    benchmark:
        "benchmarks/prepare_data.tsv"
    conda:
        ENVIRONMENT
    params:
        md5=config["data_md5"],
        url=config["data_url"],
        layout={k: config[k] for k in ("train_records", "test_records", "val_size", "split_seed")},
    script:
        "../scripts/prepare_data.py"
