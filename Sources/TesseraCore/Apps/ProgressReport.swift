import Foundation

/// Progress of `tessera run` on standard error: a redrawn bar on a terminal; without one (Slurm,
/// nohup, journald, CI) one plain line every `interval` seconds and when a slide finishes.
public final class ProgressReport: @unchecked Sendable {
    // @unchecked: state guarded by `lock`.
    private let lock = NSLock()
    private let terminal: Bool
    private let interval: Double
    private let write: @Sendable (String) -> Void
    private var started = Date()
    /// Tiles done when the current slide was first seen (a resumed job starts above 0).
    private var baseline = 0
    private var current = ""
    private var lastDraw = Date.distantPast

    /// `terminal`: redraw one line; else log lines every `interval` seconds.
    public init(terminal: Bool, interval: Double = 5, write: @escaping @Sendable (String) -> Void) {
        self.terminal = terminal
        self.interval = max(0.1, interval)
        self.write = write
    }

    /// For standard error: a bar when it is a terminal (and `CI` is unset), else log lines.
    public static func forStandardError(interval: Double = 5) -> ProgressReport {
        let terminal = isatty(STDERR_FILENO) == 1 && ProcessInfo.processInfo.environment["CI"] == nil
        return ProgressReport(terminal: terminal, interval: interval) { FileHandle.standardError.write(Data($0.utf8)) }
    }

    public func update(_ name: String, _ done: Int, _ total: Int) {
        lock.withLock {
            if name != current {
                current = name
                started = Date()
                baseline = done
                lastDraw = Date()
            }
            let now = Date()
            let elapsed = now.timeIntervalSince(started)
            // No rate from a single sighting: tiles done before it were not done in `elapsed`.
            let rate = elapsed >= 0.5 && done > baseline ? Double(done - baseline) / elapsed : 0
            let eta = rate > 0 ? Double(total - done) / rate : 0
            let fraction = total > 0 ? Double(done) / Double(total) : 1
            if terminal {
                guard now.timeIntervalSince(lastDraw) > 0.1 || done == total else { return }
                lastDraw = now
                let width = 30
                let filled = Int(fraction * Double(width))
                let bar = String(repeating: "=", count: filled) + String(repeating: " ", count: width - filled)
                write(String(format: "\r[%@] %3.0f%% %d/%d tiles %.0f tiles/s ETA %.0fs  %@\u{1B}[K",
                             bar, fraction * 100, done, total, rate, eta, name))
            } else {
                guard now.timeIntervalSince(lastDraw) >= interval || done == total else { return }
                lastDraw = now
                let speed = rate > 0 ? String(format: ", %.0f tiles/s, ETA %.0f s", rate, eta) : ""
                write(String(format: "tessera: %@: %d/%d tiles (%.0f%%)%@\n", name, done, total, fraction * 100, speed))
            }
        }
    }

    /// Clears the bar (terminal only).
    public func finish() {
        if terminal { write("\r\u{1B}[K") }
    }
}
