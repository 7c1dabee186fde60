-- fileshare 0.2: search pages through the index by (fname, root), the key of
-- its items (fileshare/tracker/store.py, _search_page): with this index a page
-- costs what it holds, however deep into the index it starts.  It also serves
-- look-ups by name alone, so it replaces files_by_name.
CREATE INDEX files_by_name_root ON files(fname, root);
DROP INDEX files_by_name;
