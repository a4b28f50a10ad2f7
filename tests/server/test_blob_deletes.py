"""Removing blobs a transaction stops referring to: never before that transaction commits
when the store cannot undo a delete (files), or a rolled-back ingest would point at nothing."""

from __future__ import annotations

from server.blobs import LocalBlobStore, delete_on_commit, new_key


def test_delete_on_commit__files__removed_only_when_the_outer_transaction_commits(
    db_session, tmp_path
):
    """Should keep the file through a rollback and a released savepoint and remove it once
    the transaction commits, but never remove one asked for in a savepoint rolled back."""
    from sqlalchemy import text

    store = LocalBlobStore(tmp_path / "blobs")
    gone, kept = new_key("attachments"), new_key("attachments")
    store.put(gone, b"plaintext")
    store.put(kept, b"still referred to")

    db_session.execute(text("SELECT 1"))
    delete_on_commit(db_session, store, [gone])
    db_session.rollback()
    assert store.exists(gone)  # the rolled-back rows still point at it

    db_session.execute(text("SELECT 1"))
    savepoint = db_session.begin_nested()
    delete_on_commit(db_session, store, [kept])
    savepoint.rollback()  # the rows of the savepoint are gone, not their blobs
    with db_session.begin_nested():
        delete_on_commit(db_session, store, [gone])
    assert store.exists(gone)  # a savepoint released: nothing is committed yet
    db_session.commit()
    assert not store.exists(gone) and store.exists(kept)

    db_session.execute(text("SELECT 1"))
    db_session.commit()  # a later transaction has nothing left to remove
    assert store.exists(kept)
