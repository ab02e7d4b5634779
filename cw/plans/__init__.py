"""Plans: a GSD ``.planning/`` directory or a YAML plan read into one ``PlanSpec``.

Parsing, validation and comparing a plan with what the district holds: nothing here touches
the database, git or Celery.
"""
