"""A Flask app as Flask-Migrate users write it: a factory, Flask-SQLAlchemy, Flask-Migrate."""

import os

from flask import Flask
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy

db = SQLAlchemy()
migrate = Migrate()


def create_app():
    app = Flask(__name__)
    url = os.environ.get("DATABASE_URL", "sqlite:///dev.db")
    # Heroku-style URLs name no driver: this app uses psycopg 3.
    app.config["SQLALCHEMY_DATABASE_URI"] = url.replace("postgresql://", "postgresql+psycopg://", 1)
    db.init_app(app)
    migrate.init_app(app, db)
    from app import models  # noqa: F401

    return app
