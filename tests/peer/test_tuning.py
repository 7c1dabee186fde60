import ctypes.util

from fileshare.peer import tuning


def test_large_buffers_are_kept_in_the_heap_on_glibc():
    assert tuning.reuse_large_buffers() is (ctypes.util.find_library("c") is not None)


def test_without_a_c_library_nothing_is_tuned(monkeypatch):
    monkeypatch.setattr(tuning.ctypes.util, "find_library", lambda name: None)
    assert tuning.reuse_large_buffers() is False
