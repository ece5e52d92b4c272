#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

#if os(Linux)
private let rusageSelf = RUSAGE_SELF.rawValue
#else
private let rusageSelf = RUSAGE_SELF
#endif

/// Process resource figures.
public enum ResourceUsage {
    /// Peak resident set size of this process in bytes (`getrusage(RUSAGE_SELF).ru_maxrss`, KiB on Linux).
    public static var peakResidentBytes: Int {
        var usage = rusage()
        getrusage(rusageSelf, &usage)
        #if os(Linux)
        return Int(usage.ru_maxrss) * 1024
        #else
        return Int(usage.ru_maxrss)
        #endif
    }

    /// CPU time (user + system) used by this process so far, in seconds.
    public static var cpuSeconds: Double {
        var usage = rusage()
        getrusage(rusageSelf, &usage)
        func seconds(_ t: timeval) -> Double { Double(t.tv_sec) + Double(t.tv_usec) / 1e6 }
        return seconds(usage.ru_utime) + seconds(usage.ru_stime)
    }
}

/// Monotonic wall clock.
public struct Stopwatch: Sendable {
    private let start = ContinuousClock.now
    public init() {}
    /// Seconds since creation.
    public var seconds: Double {
        let elapsed = ContinuousClock.now - start
        return Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
    }
}
