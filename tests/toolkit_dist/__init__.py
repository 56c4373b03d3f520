"""The toolkit's wheel, built and installed into a clean virtual environment, and smoke-tested there."""
