"""What a build and a release are asked to be: the spec, settings, formats, eval tasks, report schemas, secret redaction."""
