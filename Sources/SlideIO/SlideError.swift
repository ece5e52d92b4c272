/// Why a slide could not be opened, tiled or read. Every case reads as one line.
public enum SlideError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The path does not exist or is not a regular file.
    case notFound(path: String)
    /// libvips has no loader for the file.
    case unsupportedFormat(path: String, reason: String)
    /// A loader accepted the file but could not open it.
    case unreadable(path: String, reason: String)
    /// Pixel data could not be decoded.
    case readFailed(path: String, reason: String)
    /// The slide carries no pixel size and none was given.
    case mppUnknown(path: String)
    /// An argument is out of range.
    case invalidArgument(String)
    /// libvips could not be initialised.
    case runtimeUnavailable(String)
    /// Writing an output image failed.
    case writeFailed(path: String, reason: String)
    /// The file is not whole: its tables point past its end (cut short, or still being written).
    case incomplete(path: String, reason: String)
    /// The slide declares more pixels than allowed, or far more than its bytes can hold.
    case tooLarge(path: String, reason: String)

    public var description: String {
        switch self {
        case .notFound(let path):
            return "\(path): no such file"
        case .unsupportedFormat(let path, let reason):
            return "\(path): not a slide Tessera can read (\(reason))"
        case .unreadable(let path, let reason):
            return "\(path): cannot open slide (\(reason))"
        case .readFailed(let path, let reason):
            return "\(path): cannot read pixels (\(reason))"
        case .mppUnknown(let path):
            return "\(path): microns per pixel (MPP) is unknown: the slide has no MPP metadata; "
                + "pass --slide-mpp to state it"
        case .invalidArgument(let message):
            return message
        case .runtimeUnavailable(let message):
            return "libvips is unavailable: \(message)"
        case .writeFailed(let path, let reason):
            return "\(path): cannot write (\(reason))"
        case .incomplete(let path, let reason):
            return "\(path): incomplete slide (\(reason))"
        case .tooLarge(let path, let reason):
            return "\(path): too large: \(reason)"
        }
    }
}
