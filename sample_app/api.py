"""The JSON REST API: users, their notes, and a health check. Errors are ``{"error": "..."}``."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from typing import Any, NoReturn

import psycopg
from flask import Blueprint, jsonify, request, url_for
from flask import abort as _abort
from flask.typing import ResponseReturnValue as Reply
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response

from sample_app.models import Note, User, db

log = logging.getLogger(__name__)
bp = Blueprint("api", __name__)

# Field name -> maximum length (stripped, non-empty), or None for free text.
USER_FIELDS: dict[str, int | None] = {"username": 80, "email": 254}
NOTE_FIELDS: dict[str, int | None] = {"title": 200, "body": None}
EMAIL = re.compile(r"[^@\s]+@[^@\s]+")
CONFLICTS = {"uq_users_username": "username already taken", "uq_users_email": "email already taken"}


def abort(status: int, message: str) -> NoReturn:
    _abort(status, description=message)


def json_error(exc: HTTPException) -> Response:
    """Every HTTP error as JSON, keeping its headers (``Allow`` on a 405)."""
    response = exc.get_response()
    response.set_data(json.dumps({"error": exc.description}))
    response.content_type = "application/json"
    return response


def user_json(user: User) -> dict[str, Any]:
    return {
        "id": user.id,
        "username": user.username,
        "email": user.email,
        "created_at": user.created_at.isoformat(),
    }


def note_json(note: Note) -> dict[str, Any]:
    return {
        "id": note.id,
        "user_id": note.user_id,
        "title": note.title,
        "body": note.body,
        "created_at": note.created_at.isoformat(),
    }


def payload(fields: Mapping[str, int | None], required: tuple[str, ...] = ()) -> dict[str, str]:
    """The request's JSON object, validated against ``fields``; 400 if anything is off."""
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        abort(400, "request body must be a JSON object")
    if unknown := sorted(set(data) - set(fields)):
        abort(400, f"unknown fields: {', '.join(unknown)}")
    if missing := [name for name in required if name not in data]:
        abort(400, f"missing fields: {', '.join(missing)}")
    if not data:
        abort(400, "nothing to update")
    clean: dict[str, str] = {}
    for name, value in data.items():
        if not isinstance(value, str):
            abort(400, f"{name} must be a string")
        limit = fields[name]
        if limit is not None:
            value = value.strip()
            if not 0 < len(value) <= limit:
                abort(400, f"{name} must be 1 to {limit} characters")
        clean[name] = value
    if "email" in clean and not EMAIL.fullmatch(clean["email"]):
        abort(400, "email is not a valid address")
    return clean


def commit() -> None:
    """Commit; a unique violation becomes a 409 (the database decides, so no race)."""
    try:
        db.session.commit()
    except IntegrityError as exc:
        db.session.rollback()
        diag = exc.orig.diag if isinstance(exc.orig, psycopg.Error) else None
        name = diag.constraint_name if diag is not None else None
        abort(409, CONFLICTS.get(name or "", "conflicts with existing data"))


def get_user(user_id: int) -> User:
    return db.get_or_404(User, user_id, description=f"user {user_id} not found")


def get_note(note_id: int) -> Note:
    return db.get_or_404(Note, note_id, description=f"note {note_id} not found")


@bp.get("/health")
def health() -> Reply:
    """Ping the database and report the Alembic revision it is at (null if unmigrated)."""
    try:
        db.session.execute(text("SELECT 1"))
        revision = None
        if db.session.scalar(text("SELECT to_regclass('alembic_version') IS NOT NULL")):
            revision = db.session.scalar(text("SELECT version_num FROM alembic_version"))
    except SQLAlchemyError as exc:
        db.session.rollback()
        log.warning("health check: database unreachable: %s", exc)
        return jsonify(status="error", database="unreachable", error="database unreachable"), 503
    return jsonify(status="ok", database="ok", alembic_revision=revision), 200


@bp.get("/users")
def list_users() -> Reply:
    users = db.session.scalars(select(User).order_by(User.id))
    return jsonify([user_json(user) for user in users]), 200


@bp.post("/users")
def create_user() -> Reply:
    user = User(**payload(USER_FIELDS, required=("username", "email")))
    db.session.add(user)
    commit()
    location = url_for("api.read_user", user_id=user.id)
    return jsonify(user_json(user)), 201, {"Location": location}


@bp.get("/users/<int:user_id>")
def read_user(user_id: int) -> Reply:
    return jsonify(user_json(get_user(user_id))), 200


@bp.patch("/users/<int:user_id>")
def update_user(user_id: int) -> Reply:
    user = get_user(user_id)
    for name, value in payload(USER_FIELDS).items():
        setattr(user, name, value)
    commit()
    return jsonify(user_json(user)), 200


@bp.delete("/users/<int:user_id>")
def delete_user(user_id: int) -> Reply:
    db.session.delete(get_user(user_id))
    commit()
    return "", 204


@bp.get("/users/<int:user_id>/notes")
def list_notes(user_id: int) -> Reply:
    get_user(user_id)
    notes = db.session.scalars(select(Note).where(Note.user_id == user_id).order_by(Note.id))
    return jsonify([note_json(note) for note in notes]), 200


@bp.post("/users/<int:user_id>/notes")
def create_note(user_id: int) -> Reply:
    get_user(user_id)
    note = Note(user_id=user_id, **payload(NOTE_FIELDS, required=("title",)))
    db.session.add(note)
    commit()
    location = url_for("api.read_note", note_id=note.id)
    return jsonify(note_json(note)), 201, {"Location": location}


@bp.get("/notes/<int:note_id>")
def read_note(note_id: int) -> Reply:
    return jsonify(note_json(get_note(note_id))), 200


@bp.patch("/notes/<int:note_id>")
def update_note(note_id: int) -> Reply:
    note = get_note(note_id)
    for name, value in payload(NOTE_FIELDS).items():
        setattr(note, name, value)
    commit()
    return jsonify(note_json(note)), 200


@bp.delete("/notes/<int:note_id>")
def delete_note(note_id: int) -> Reply:
    db.session.delete(get_note(note_id))
    commit()
    return "", 204
