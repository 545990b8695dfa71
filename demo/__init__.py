"""The demo application: every stage of the pipeline on the bundled corpus (``python -m demo``, ``bash launch.sh``)."""
