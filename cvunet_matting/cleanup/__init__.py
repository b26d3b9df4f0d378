"""Files removed: retention's expiry and an owner's delete, through one purge."""
