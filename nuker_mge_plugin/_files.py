"""Output files without surprises: checked before any work, written whole or not at all.

``check_output_file`` turns the usual file-system mistakes (a directory, a missing or read-only
folder) into one ``ValueError`` that names the option, before anything is computed or written.
``StagedFiles`` writes each output to a temporary file beside its destination and renames them
all into place only once every one is complete; on any error the temporary files are removed,
so a failed command leaves no partial or stale-looking output behind.
"""

import contextlib
import math
import os
import tempfile


def check_output_file(path, option):
    """Raise ``ValueError`` naming ``option`` if a file cannot be written at ``path``."""
    path = os.fspath(path)
    if not path:
        raise ValueError(f"{option}: give a file name")
    if os.path.isdir(path):
        raise ValueError(f"{option} {path} is a directory: give a file name")
    folder = os.path.dirname(path) or "."
    if not os.path.exists(folder):
        raise ValueError(f"{option} {path}: the folder {folder} does not exist")
    if not os.path.isdir(folder):
        raise ValueError(f"{option} {path}: {folder} is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"{option} {path}: the folder {folder} is not writable")
    return path


def check_output_dir(path, option):
    """Raise ``ValueError`` naming ``option`` if ``path`` cannot be (or become) a writable folder."""
    path = os.fspath(path)
    if not path:
        raise ValueError(f"{option}: give a folder name")
    if os.path.exists(path):
        if not os.path.isdir(path):
            raise ValueError(f"{option} {path} exists and is not a folder")
        if not os.access(path, os.W_OK | os.X_OK):
            raise ValueError(f"{option} {path}: the folder is not writable")
        return path
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise ValueError(f"{option} {path}: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"{option} {path}: cannot create it inside {parent} (not writable)")
    return path


class StagedFiles:
    """Temporary files beside their destinations, renamed into place together by :meth:`commit`.

    Use as a context manager: leaving the block by an exception removes every temporary file
    and leaves the destinations as they were. ``stage`` creates the temporary file at once,
    so a folder that refuses new files (read-only, ``/proc``...) fails before any work is done.
    """

    def __init__(self):
        self._staged = []  # (temporary path, destination, option)

    def stage(self, path, option=None):
        """A temporary path to write instead of ``path`` (same folder, same extension).

        With ``option`` (the command-line option that named ``path``), a folder that refuses
        the file raises ``ValueError`` naming it; without, the ``OSError`` itself.
        """
        path = os.fspath(path)
        folder, name = os.path.split(path)
        ext = os.path.splitext(name)[1]
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=f".part{ext}", dir=folder or ".")
        except OSError as err:
            if option is None:  # library callers get the usual OSError
                raise
            raise ValueError(f"{option} {path}: cannot write there ({err.strerror})") from None
        os.close(fd)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 would outlive the rename
        self._staged.append((tmp, path, option))
        return tmp

    def commit(self):
        """Rename every staged file onto its destination."""
        for tmp, path, option in self._staged:
            if os.path.getsize(tmp) == 0:
                raise ValueError(f"{option or 'output'} {path}: nothing was written")
        for tmp, path, _ in self._staged:
            os.replace(tmp, path)
        self._staged = []

    def discard(self):
        for tmp, _, _ in self._staged:
            with contextlib.suppress(FileNotFoundError):
                os.remove(tmp)
        self._staged = []

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.discard()
        return False


def _umask():
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path, write):
    """Call ``write(tmp_path)``, then rename the temporary file onto ``path`` (removed on error)."""
    with StagedFiles() as files:
        write(files.stage(path))
        files.commit()
    return path


def fits_truncation(hdu, path):
    """``(bytes the header describes, bytes the file holds)`` of ``hdu``'s data when the file at
    ``path`` is too short for them, else None. The FITS standard's size,
    ``|BITPIX| / 8 * GCOUNT * (PCOUNT + NAXIS1 * ... * NAXISn)`` (NAXIS1 left out of the product
    for random groups), judged from the header alone: nothing is read. Compressed HDUs are skipped
    (their header describes the uncompressed image)."""
    from astropy.io import fits

    if not isinstance(hdu, (fits.PrimaryHDU, fits.ImageHDU, fits.GroupsHDU)):
        return None
    h = hdu.header
    n_axes = int(h.get("NAXIS", 0))
    first = 2 if h.get("GROUPS", False) else 1
    if n_axes < first:
        return None
    count = math.prod(int(h[f"NAXIS{i}"]) for i in range(first, n_axes + 1))
    expected = abs(int(h.get("BITPIX", 8))) // 8 * int(h.get("GCOUNT", 1)) * (int(h.get("PCOUNT", 0)) + count)
    held = max(os.path.getsize(path) - hdu.fileinfo()["datLoc"], 0)
    return (expected, held) if held < expected else None
