"""The browser pages, their own JSON routes under /page, and sign-in."""
