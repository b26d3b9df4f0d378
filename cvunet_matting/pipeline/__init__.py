"""Work from submission to its end: store, record, enqueue, chunk, finish, mirror, archive, cancel."""
