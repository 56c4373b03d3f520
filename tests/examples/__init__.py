"""The examples under examples/ run as their READMEs say."""
