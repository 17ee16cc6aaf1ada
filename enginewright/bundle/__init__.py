"""The deployable bundle: its manifest, its store on S3 or a local folder."""
