"""Scientific domains shipped with the workbench; each registers an ``awd.domain.Domain``."""
