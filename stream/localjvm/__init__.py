"""Local JVM services: the plumbing the local Kafka broker and the local schema registry share.

Both are a Java program the project fetches once with Maven, runs detached on this machine
and finds again later; what differs is what they fetch, their command line and how to ask
them whether they are ready. This package is the part that does not differ, and it knows
neither Kafka nor the registry (:mod:`stream.localbroker` and :mod:`stream.registry` sit
on top of it; it imports neither)::

    home       the state directory: $STREAM_HOME or ./.stream
    locking    an inter-process flock, so two starts never fetch or launch twice
    ports      is a port free, does it answer, a free pair/block; "port in use" errors
    java       find a java of at least version N and say what was found if none is
    maven      run Maven once to fetch artifacts; a cache marked complete only on success
    process    detached launch, pid liveness, SIGTERM then SIGKILL, log tail and rotation
    service    one service per data directory: pid file, launch, stop, readiness with log tail
    readiness  the wait-until-it-answers loop around a service's own probe
    cli        one-line errors for ``stream broker|registry ACTION``

Errors are raised as the caller's own classes (passed in), so a user of the broker
catches :class:`stream.localbroker.PortInUseError` and a user of the registry
:class:`stream.registry.RegistryPortInUseError`, as before this layer existed.
"""
