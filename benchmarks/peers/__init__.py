"""The benchmark pipeline written for peer frameworks (run by ``stream bench``)."""
