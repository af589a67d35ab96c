from sqlalchemy import Column, Integer, MetaData, String, Table

metadata = MetaData()

items = Table(
    "items",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(100), nullable=False),
)
