import Foundation
import JobStore
import SlideIO

/// The one way a slide becomes a job, for `run`, `watch` and the API alike: the model resolved
/// once to its identity, the slide hashed and opened once, the parameters made canonical
/// (defaults filled in from the model card, a fallback slide MPP kept only for slides without
/// one), then enqueued. One slide content analysed one way is one job, whichever door it came in.
public struct SlideIntake: Sendable {
    /// Which interface the user speaks through: errors name its flags or parameters.
    public enum Interface: Sendable {
        case commandLine, api
    }

    /// How the intake keeps the slide file.
    public enum Keeping: Sendable {
        /// Read where it is (`run`, `watch` without `--move`).
        case inPlace
        /// Hard-linked (copied across file systems) into the content-addressed store, because the
        /// original will move (`watch --move`).
        case linkIntoStore
        /// Moved into the store: the file is the intake's own (an API upload).
        case moveIntoStore
    }

    /// One slide to take in.
    public struct Submission: Sendable {
        public var path: String
        /// The name the user knows the slide by (file name only).
        public var name: String
        public var model: String
        public var parameters: AnalysisParameters
        public var idempotencyKey: String?
        public var keeping: Keeping

        public init(path: String, name: String? = nil, model: String, parameters: AnalysisParameters = AnalysisParameters(),
                    idempotencyKey: String? = nil, keeping: Keeping = .inPlace) {
            self.path = path
            self.name = name ?? (path as NSString).lastPathComponent
            self.model = model
            self.parameters = parameters
            self.idempotencyKey = idempotencyKey
            self.keeping = keeping
        }
    }

    /// What became of a submission.
    public struct Receipt: Sendable {
        public var job: Job
        /// False when the same slide, model identity and parameters already had a job.
        public var created: Bool
        public var identity: ModelIdentity
    }

    /// Why a submission was refused, with a stable code.
    public struct Refusal: Error, Sendable, CustomStringConvertible {
        public enum Code: String, Sendable {
            case notFound = "not_found", notASlide = "not_a_slide", missingMPP = "missing_mpp", unknownModel = "unknown_model"
            case badParameter = "bad_parameter", idempotencyConflict = "idempotency_conflict", storage
            case incompleteSlide = "incomplete_slide", slideTooLarge = "slide_too_large"
        }

        public var code: Code
        public var description: String
    }

    public let store: any JobQueue
    public let dataDirectory: String
    public let modelsDirectory: String
    public let interface: Interface
    /// What a slide must keep to be taken (the pixel limit, `--max-slide-pixels`).
    public let limits: SlideLimits

    public init(store: any JobQueue, dataDirectory: String, modelsDirectory: String, interface: Interface,
                limits: SlideLimits = SlideLimits()) {
        self.store = store
        self.dataDirectory = dataDirectory
        self.modelsDirectory = modelsDirectory
        self.interface = interface
        self.limits = limits
    }

    /// A parameter as the user's interface spells it.
    public func name(of key: AnalysisParameters.CodingKeys) -> String {
        switch interface {
        case .commandLine: return "--" + key.stringValue.replacingOccurrences(of: "_", with: "-")
        case .api: return "the \(key.stringValue) query parameter"
        }
    }

    /// Resolves a model name (or, on the command line, a path) to its reference and identity.
    public func model(_ nameOrPath: String) throws -> (ModelReference, ModelIdentity) {
        do {
            let reference = try ModelCatalog.resolve(nameOrPath, in: modelsDirectory)
            return (reference, try ModelIdentity.of(reference))
        } catch let error as ModelCatalogError {
            throw Refusal(code: .unknownModel, description: error.description)
        } catch {
            throw Refusal(code: .unknownModel, description: "model \(nameOrPath): cannot read its file")
        }
    }

    /// The parameters a job of `slide` with `reference` runs with: the model card's MPP when none
    /// was asked for, the fallback slide MPP only when the slide records none, the model identity.
    public func canonical(_ parameters: AnalysisParameters, slide: SlideProperties, reference: ModelReference,
                          identity: ModelIdentity) throws -> AnalysisParameters {
        try parameters.validate(naming: name(of:))
        var canonical = parameters
        canonical.mpp = parameters.mpp ?? reference.card.input.mpp ?? 0.5
        if slide.mppX != nil && slide.mppSource != .override {
            canonical.slideMPP = nil
        } else if parameters.slideMPP == nil {
            throw Refusal(code: .missingMPP, description: "\(slide.path): the slide records no microns per pixel; "
                          + "state it with \(name(of: .slideMPP)) (e.g. 0.25 for 40x, 0.5 for 20x)")
        }
        canonical.modelSHA256 = identity.onnxSHA256
        canonical.cardSHA256 = identity.cardSHA256
        var precision = parameters.precision
        canonical.precisionAuto = nil
        if precision == "auto" {
            let choice: PrecisionChoice.Choice
            do {
                choice = try PrecisionChoice.resolve(modelFile: reference.path, modelSHA256: identity.onnxSHA256)
            } catch {
                throw Refusal(code: .badParameter, description: "\(name(of: .precision)) auto: \(error)")
            }
            precision = choice.name
            canonical.precisionAuto = choice.reason
        }
        canonical.precision = precision == "fp32" ? nil : precision
        canonical.calibrationSHA256 = nil
        if canonical.precision == "int8" {
            let calibration = ModelQuantize.calibrationPath(forModelFile: reference.path)
            if let digest = try? SHA256.hexDigest(ofFile: calibration) {
                canonical.calibrationSHA256 = digest
            } else if !ModelQuantize.bringsOwnRanges(modelFile: reference.path, sha256: identity.onnxSHA256) {  // a QDQ model's ranges are in its file
                throw Refusal(code: .badParameter, description: "\(name(of: .precision)) int8: \(reference.name) has no INT8 calibration; "
                              + "make one with `tessera models quantize \(reference.name) --calibration DIR` (tiles like the slides')")
            }
        }
        return canonical
    }

    /// Takes a slide in: one job per (content, model identity, canonical parameters).
    public func submit(_ submission: Submission) throws -> Receipt {
        let (reference, identity) = try model(submission.model)
        let slide: Slide
        do {
            slide = try Slide.open(path: submission.path, limits: limits)
        } catch {
            let message = error.description.replacingOccurrences(of: submission.path, with: submission.name)
            switch error {
            case .notFound: throw Refusal(code: .notFound, description: message)
            case .incomplete: throw Refusal(code: .incompleteSlide, description: message)
            case .tooLarge: throw Refusal(code: .slideTooLarge, description: message)
            default: throw Refusal(code: .notASlide, description: message)
            }
        }
        var properties = slide.properties
        properties.path = submission.name
        let parameters = try canonical(submission.parameters, slide: properties, reference: reference, identity: identity)
        let digest: String
        do {
            digest = try SHA256.hexDigest(ofFile: submission.path)
        } catch {
            throw Refusal(code: .storage, description: "\(submission.name): cannot read the file")
        }
        let size = ((try? FileManager.default.attributesOfItem(atPath: submission.path))?[.size] as? NSNumber)?.intValue ?? 0
        let path = try keep(submission, digest: digest)
        let stored = StoredSlide(sha256: digest, path: path, originalName: submission.name, size: size)
        let (job, created) = try store.enqueue(slide: stored, model: identity.identifier, parameters: parameters.canonicalJSON,
                                               idempotencyKey: submission.idempotencyKey)
        if !created, submission.idempotencyKey != nil,
           job.slide.sha256 != digest || job.model != identity.identifier || job.parameters != parameters.canonicalJSON {
            throw Refusal(code: .idempotencyConflict, description: "Idempotency-Key '\(submission.idempotencyKey ?? "")' was used "
                          + "for job \(job.id) with another slide, model or parameters; use a new key for a new request")
        }
        return Receipt(job: job, created: created, identity: identity)
    }

    /// The path the job reads the slide from.
    private func keep(_ submission: Submission, digest: String) throws -> String {
        let absolute = URL(fileURLWithPath: submission.path).standardizedFileURL.path
        let ext = (submission.name as NSString).pathExtension.lowercased().filter { $0.isLetter || $0.isNumber }
        // A MIRAX slide is a file and its folder: it is only ever read in place.
        guard submission.keeping != .inPlace, ext != "mrxs" else { return absolute }
        let folder = DataDirectory.slides(dataDirectory)
        let stored = folder + "/" + digest + (ext.isEmpty ? "" : ".\(ext)")
        let fm = FileManager.default
        do {
            try fm.createDirectory(atPath: folder, withIntermediateDirectories: true)
            // A stored file of another size is not this content any more (a hard link whose original a
            // scanner rewrote in place): it is replaced, never handed to a job as this digest.
            func size(_ path: String) -> Int? { ((try? fm.attributesOfItem(atPath: path))?[.size] as? NSNumber)?.intValue }
            if fm.fileExists(atPath: stored), size(stored) != size(absolute) { try? fm.removeItem(atPath: stored) }
            if fm.fileExists(atPath: stored) {
                if submission.keeping == .moveIntoStore { try? fm.removeItem(atPath: absolute) }
                return stored
            }
            let temporary = folder + "/.incoming-" + UUID().uuidString
            switch submission.keeping {
            case .moveIntoStore: try fm.moveItem(atPath: absolute, toPath: temporary)
            case .linkIntoStore:
                if link(absolute, temporary) != 0 { try fm.copyItem(atPath: absolute, toPath: temporary) }
            case .inPlace: break
            }
            guard rename(temporary, stored) == 0 else {
                try? fm.removeItem(atPath: temporary)
                throw Refusal(code: .storage, description: "cannot store the slide in \(folder)")
            }
            Self.syncDirectory(folder)
            return stored
        } catch let refusal as Refusal {
            throw refusal
        } catch {
            throw Refusal(code: .storage, description: "cannot store the slide in \(folder): \((error as NSError).localizedDescription)")
        }
    }

    /// Flushes a folder's entries, so a renamed-in slide survives a power cut before the job row does.
    static func syncDirectory(_ path: String) {
        let fd = open(path, O_RDONLY | O_DIRECTORY)
        if fd >= 0 {
            fsync(fd)
            close(fd)
        }
    }
}
