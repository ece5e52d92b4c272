import Foundation

/// `OUT/cohort.csv`: one row per slide of a run (name, job, state, tissue tiles, class
/// fractions, seconds, error code), for a spreadsheet or pandas.
public enum CohortTable {
    public static func write(_ reports: [RunReport], to path: String) throws {
        let classes = Array(Set(reports.flatMap { $0.classFractions?.keys.map { $0 } ?? [] })).sorted()
        func field(_ text: String) -> String {
            text.contains(where: { ",\"\n".contains($0) }) ? "\"" + text.replacingOccurrences(of: "\"", with: "\"\"") + "\"" : text
        }
        var text = (["slide", "output_dir", "job", "state", "tiles_tissue"] + classes.map { "fraction_" + $0 } + ["seconds", "error_code"])
            .map(field).joined(separator: ",") + "\n"
        for report in reports {
            var row = [report.slide, report.outputDir ?? "", report.job.map(String.init) ?? "", report.state,
                       report.tilesTissue.map(String.init) ?? ""]
            row += classes.map { name in report.classFractions?[name].map { String(format: "%.6f", $0) } ?? "" }
            row += [report.seconds.map { String(format: "%.3f", $0) } ?? "", report.errorCode ?? ""]
            text += row.map(field).joined(separator: ",") + "\n"
        }
        do {
            try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            try text.write(toFile: path, atomically: true, encoding: .utf8)
        } catch {
            throw UsageError("\(path): cannot write the cohort table (\((error as NSError).localizedDescription))")
        }
    }
}
