"""The models every fixture project shares: the table revision 0001 creates."""

from sqlalchemy import Column, Integer, MetaData, String, Table

metadata = MetaData()

items = Table(
    "items",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(100), nullable=False),
)
