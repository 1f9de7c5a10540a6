"""The contracts of meterline: the usage event, money, topic names, settings, the SQL schema."""
