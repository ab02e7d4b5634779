"""The file-system UI: the database mirrored into ``cw-district/`` and a person's edits applied."""
