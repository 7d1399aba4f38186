"""The report's built-in sections: each module registers one section and its figures (see registry)."""
