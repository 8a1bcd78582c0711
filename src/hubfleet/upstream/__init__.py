"""The organisation's open-source contribution ledger: its engineers' work on the key projects, synced from GitHub
(GraphQL where one query replaces many, REST with conditional requests where GitHub offers them), non-code work
recorded by hand, and reports against the organisation's upstream policy."""
