import Engine
import Foundation
import JobStore
import SlideIO

/// Why a job attempt failed: a stable machine-readable code, a one-line message that says what
/// to do, and whether another attempt could help. Stored in the job row as `[code] message`.
public struct JobFailure: Error, Sendable, Equatable, CustomStringConvertible {
    /// Stable codes (also in `docs/openapi.json`).
    public enum Code: String, Sendable, CaseIterable {
        /// The file is not a slide Tessera can read.
        case notASlide = "not_a_slide"
        /// The slide records no microns per pixel and none was stated.
        case missingMPP = "missing_mpp"
        /// Pixels could not be read (truncated or damaged file).
        case readFailed = "read_failed"
        /// The slide file is cut short (its tile or strip tables point past its end) or its tables
        /// are inconsistent: never analysed, since the missing part would be read as background.
        case incompleteSlide = "incomplete_slide"
        /// The slide declares more pixels than the limit (`--max-slide-pixels`), or far more than its bytes can hold.
        case slideTooLarge = "slide_too_large"
        /// The slide file is gone from where the job recorded it.
        case slideMissing = "slide_missing"
        /// The model could not be loaded or run.
        case modelError = "model_error"
        /// The model file changed after the job was queued.
        case modelChanged = "model_changed"
        /// The job's stored parameters cannot be read.
        case badParameters = "bad_parameters"
        /// The worker's process ended (or its lease expired) too often, or the analysis process crashed.
        case workerLost = "worker_lost"
        /// Results could not be written (e.g. the disk holding the data folder is full).
        case writeFailed = "write_failed"
        /// The analysis went over its memory, time or CPU budget (`--job-memory`, `--job-timeout`).
        case overBudget = "over_budget"
        /// Anything else.
        case internalError = "internal"
    }

    public var code: Code
    public var message: String
    /// Whether retrying the same job could help (a retry uses another attempt and waits its backoff).
    public var transient: Bool

    public init(_ code: Code, _ message: String, transient: Bool = false) {
        self.code = code
        self.message = message
        self.transient = transient
    }

    public var description: String { message }

    /// The job row's `error` text.
    public var stored: String { "[\(code.rawValue)] \(message)" }

    /// Reads a job row's `error` text; text without a code (older rows, lease expiry) keeps its words.
    public init(stored text: String) {
        if text.hasPrefix("["), let close = text.firstIndex(of: "]"),
           let code = Code(rawValue: String(text[text.index(after: text.startIndex)..<close])) {
            self.init(code, String(text[text.index(after: close)...]).trimmingCharacters(in: .whitespaces))
        } else if text.contains("worker process ended") || text.contains("lease expired") {
            self.init(.workerLost, text)
        } else {
            self.init(.internalError, text)
        }
    }

    /// The failure an error stands for, naming the slide as the user did (`name`), never by the
    /// stored path (which can carry identifying folder names).
    static func from(_ error: any Error, slidePath: String, slideName: String) -> JobFailure {
        func named(_ text: String) -> String { text.replacingOccurrences(of: slidePath, with: slideName) }
        switch error {
        case let failure as JobFailure:
            return JobFailure(failure.code, named(failure.message), transient: failure.transient)
        case let slide as SlideError:
            switch slide {
            case .notFound: return JobFailure(.slideMissing, named(slide.description) + " (the slide was moved or deleted after it was queued)")
            case .unsupportedFormat, .unreadable: return JobFailure(.notASlide, named(slide.description))
            case .mppUnknown: return JobFailure(.missingMPP, "\(slideName): the slide records no microns per pixel; state it (slide_mpp / --slide-mpp) and queue it again")
            case .writeFailed(_, let reason):
                let full = reason.contains("No space left") || reason.contains("ENOSPC")
                return JobFailure(.writeFailed, named(slide.description)
                                  + (full ? "; the disk holding the data folder is full: free space, then retry the job" : ""),
                                  transient: true)
            case .readFailed, .runtimeUnavailable: return JobFailure(.readFailed, named(slide.description), transient: true)
            case .invalidArgument: return JobFailure(.badParameters, named(slide.description))
            case .incomplete: return JobFailure(.incompleteSlide, named(slide.description) + "; put the complete file in again")
            case .tooLarge: return JobFailure(.slideTooLarge, named(slide.description))
            }
        case let model as ModelError: return JobFailure(.modelError, "model: \(model)")
        case let catalog as ModelCatalogError: return JobFailure(.modelError, catalog.description)
        default: return JobFailure(.internalError, named("\(error)"), transient: true)
        }
    }
}
