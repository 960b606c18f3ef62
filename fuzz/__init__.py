"""Coverage-guided fuzzing of ckptdoctor's parsers with atheris (``make fuzz``; see ``fuzz/README.md``)."""
