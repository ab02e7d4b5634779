"""Housekeeping of a district: ``cw gc``, ``cw doctor`` and its repairs, the merge queue report.

``gc`` removes only what holds no unmerged work; ``doctor`` changes nothing and says how to fix
what is broken. Neither ever deletes a file a person may have made.
"""
