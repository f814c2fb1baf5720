"""Load testing: `hermes-server bench`."""
