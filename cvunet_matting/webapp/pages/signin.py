"""Sign-in and sign-out for the pages, and the admin check Traefik asks before Flower."""

from __future__ import annotations

import time
import unicodedata
from urllib.parse import urlsplit

from flask import Blueprint, current_app, flash, g, redirect, render_template, request, session, url_for
from flask_login import login_user, logout_user

from cvunet_matting import db
from cvunet_matting.accounts import signin_limits
from cvunet_matting.accounts import users as accounts
from cvunet_matting.db import reads
from cvunet_matting.webapp.access import SIGNED_IN_AT, session_actor

bp = Blueprint("signin", __name__)
MAX_FIELD = 1024  # argon2 would hash a megabyte of "password" too: refuse before it tries
HASH_SLOTS = "cvunet.signin_hashes"
BUSY_RETRY_S = 1  # a hash takes a fraction of a second: a slot is soon free again


def local_target(target: str | None, fallback: str) -> str:
    """Only a path on this site: never an open redirect to another one. Whitespace and control
    characters are refused outright: the Location header drops tabs (urlsplit, as browsers do), so
    "/<TAB>/evil.example" would leave as "//evil.example", and a newline would fail the response."""
    if not target or any(ch.isspace() or unicodedata.category(ch).startswith("C") for ch in target):
        return fallback
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not parts.path.startswith("/") or target.startswith("//") or "\\" in target:
        return fallback
    return target


@bp.get("/login")
def login():
    with db.transaction() as cur:
        no_users = reads.count_users(cur) == 0
    return render_template("login.html", next=request.args.get("next", ""), no_users=no_users)


@bp.record_once
def hash_slots(state) -> None:
    """The process's password-hash slots, sized by CVUNET_SIGNIN_HASHES."""
    state.app.extensions[HASH_SLOTS] = signin_limits.HashSlots(state.app.extensions["cvunet.settings"].signin_hashes)


def signed_in_as(name: str) -> bool:
    """This browser holds a valid session of the named user: the owner, wherever they are."""
    actor = session_actor()
    return actor is not None and actor.name.lower() == name.strip().lower()


def refused(message: str, wait: int):
    """429 on the sign-in page, with the name kept and when to try again."""
    flash(message, "error")
    form = request.form
    page = render_template("login.html", next=form.get("next", ""), no_users=False, name=form.get("name"))
    return page, 429, {"Retry-After": str(wait)}


def how_long(seconds: int) -> str:
    return f"{seconds} seconds" if seconds < 120 else f"{seconds // 60 + 1} minutes"


@bp.post("/login")
def sign_in():
    name, password = request.form.get("name", "").strip(), request.form.get("password", "")
    if len(name) > MAX_FIELD or len(password) > MAX_FIELD:
        name, password = "", ""
    attempt = signin_limits.Attempt.of(name, request.remote_addr or "unknown", signed_in_as(name))
    wait = attempt.claim()
    if wait:
        return refused(f"Too many wrong passwords: try again in {how_long(wait)}.", wait)
    with current_app.extensions[HASH_SLOTS].held() as free:
        if not free:
            attempt.withdraw()  # never tried: not a wrong password
            return refused("Too many sign-ins at this moment: try again in a second.", BUSY_RETRY_S)
        actor = accounts.by_password(name, password) if name and password else None
    if actor is None:
        flash("Wrong name or password.", "error")
        return render_template("login.html", next=request.form.get("next", ""), no_users=False, name=name), 401
    attempt.succeeded()
    session.clear()  # a fresh session (and CSRF token) after sign-in: no fixation
    login_user(actor)
    session.permanent = True
    session[SIGNED_IN_AT] = time.time()
    return redirect(local_target(request.form.get("next"), url_for("ui.index")))


@bp.post("/logout")
def logout():
    accounts.end_sessions(g.actor)  # a copy of the cookie kept elsewhere stops working too
    logout_user()
    session.clear()
    flash("Signed out.", "info")
    return redirect(url_for("signin.login"))


@bp.get("/auth/admin")
def check_admin():
    """204 for an admin (session or API key): Traefik's forwardAuth in front of Flower asks this."""
    return "", 204
