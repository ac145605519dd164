"""CRM contact notes → CDP notes migration: the logic behind the `crm_notes_migration` DAG.

Importable without a scheduler: DAG files and the plugin only wire these
functions together.
"""
