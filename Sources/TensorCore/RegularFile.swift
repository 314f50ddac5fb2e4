import Foundation

/// What a path that must be read as a regular file is instead, or nil when it is a regular file
/// (or does not exist: the caller's own "no such file" message applies). Symbolic links are
/// followed. Reading a FIFO blocks until a writer appears, and a device may never end: readers call
/// this before they open a path, so that a FIFO given as `--model` is an error, not a hang.
public func nonRegularFileKind(_ path: String) -> String? {
    var st = stat()
    guard stat(path, &st) == 0 else { return nil }
    return fileKindName(st.st_mode)
}

/// "a FIFO (named pipe)", "a folder", ... for a file mode; nil for a regular file.
public func fileKindName(_ mode: mode_t) -> String? {
    switch mode & S_IFMT {
    case S_IFREG: return nil
    case S_IFDIR: return "a folder"
    case S_IFIFO: return "a FIFO (named pipe)"
    case S_IFSOCK: return "a socket"
    case S_IFCHR: return "a character device"
    case S_IFBLK: return "a block device"
    case S_IFLNK: return "a symbolic link"
    default: return "a special file"
    }
}
