import Foundation

/// Every error the slide and image layer throws. Each message names the file and says what to do.
public enum SlideError: LocalizedError, Equatable {
  case notFound(path: String)
  case isDirectory(path: String)
  case emptyFile(path: String)
  case notReadable(path: String)
  case imageNotSlide(path: String, kind: String)
  case unrecognized(path: String)
  case openSlide(path: String, message: String)
  case regionOutside(path: String, x: Int, y: Int, width: Int, height: Int, slideWidth: Int, slideHeight: Int)
  case invalidArgument(path: String, message: String)
  case noMPP(path: String, option: String)
  case imageDecode(path: String, message: String)
  case imageEncode(path: String, message: String)
  case unsupportedImage(path: String)

  public var errorDescription: String? {
    switch self {
    case .notFound(let p): return "\(p): no such file"
    case .isDirectory(let p): return "\(p): is a directory, not a slide file"
    case .emptyFile(let p): return "\(p): file is empty (0 bytes)"
    case .notReadable(let p): return "\(p): permission denied; check the file's read permission"
    case .imageNotSlide(let p, let kind):
      return
        "\(p): is a plain \(kind) image, not a whole-slide image; pass it as an image input instead (for example `eosin classify \(p)`)"
    case .unrecognized(let p):
      return "\(p): not a slide format OpenSlide recognises (corrupt, truncated or not a slide)"
    case .openSlide(let p, let m): return "\(p): OpenSlide error: \(m)"
    case .regionOutside(let p, let x, let y, let w, let h, let sw, let sh):
      return "\(p): region x=\(x) y=\(y) \(w)x\(h) lies outside the slide (\(sw)x\(sh) at level 0)"
    case .invalidArgument(let p, let m): return "\(p): \(m)"
    case .noMPP(let p, let option):
      return "\(p): slide has no microns-per-pixel; pass \(option) VALUE if you know it"
    case .imageDecode(let p, let m): return "\(p): cannot decode image: \(m)"
    case .imageEncode(let p, let m): return "\(p): cannot write image: \(m)"
    case .unsupportedImage(let p):
      return "\(p): unknown image type; expected JPEG, PNG or TIFF"
    }
  }
}

/// Checks that `path` names a readable, non-empty regular file, throwing the precise reason.
///
/// Used before handing a path to a C library, so the user sees "no such file" or "is a directory"
/// rather than a library's generic failure.
/// - Returns: the file's size in bytes.
public func checkReadableFile(_ path: String) throws -> Int {
  var st = stat()
  if stat(path, &st) != 0 {
    if errno == EACCES { throw SlideError.notReadable(path: path) }
    if errno == ELOOP { throw SlideError.invalidArgument(path: path, message: "symbolic link loop") }
    throw SlideError.notFound(path: path)
  }
  if (st.st_mode & S_IFMT) == S_IFDIR { throw SlideError.isDirectory(path: path) }
  if st.st_size == 0 { throw SlideError.emptyFile(path: path) }
  let fd = open(path, O_RDONLY)
  if fd < 0 {
    if errno == EACCES { throw SlideError.notReadable(path: path) }
    throw SlideError.notFound(path: path)
  }
  close(fd)
  return Int(st.st_size)
}
