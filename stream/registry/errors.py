"""Errors of the project-managed schema registry.

All of them are :class:`stream.errors.FatalError` (nothing that needs the registry can
run without it) and each message is meant to be shown to a person as is::

    FatalError
    └── RegistryError                 the local registry could not be prepared, started or stopped
        ├── RegistryPrerequisiteError   no Java 21+, or no Maven for the one-time download
        ├── RegistryDownloadError       Maven could not fetch the Apicurio Registry distribution
        ├── RegistryPortInUseError      the port belongs to something else
        └── RegistryStartError          the registry died or did not answer in time
"""

from __future__ import annotations

from stream.errors import FatalError


class RegistryError(FatalError):
    """The local schema registry could not be prepared, started or stopped."""


class RegistryPrerequisiteError(RegistryError):
    """Java 21+ (to run it) or Maven (to fetch it once) is missing."""


class RegistryDownloadError(RegistryError):
    """Maven failed to fetch or the archive failed to unpack."""


class RegistryPortInUseError(RegistryError):
    """A port the registry needs is held by another process."""


class RegistryStartError(RegistryError):
    """The registry process exited, or did not answer within the timeout."""
