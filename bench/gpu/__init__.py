"""The GPU check in parts: ``harness`` (sizes, a part's record), one module per part, ``report``."""
