import ArgumentParser
import Foundation
import TesseraCore

extension ModelsCommand {
    /// `tessera models list`: the models under models/ and what their cards say.
    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List the shipped models.")

        @Flag(help: "Print one JSON object per model.") var json = false

        func run() throws {
            let directory = ModelCatalog.directory
            let names = ModelCatalog.names(in: directory)
            if names.isEmpty { print("no models in \(ModelCatalog.folders(of: directory).joined(separator: ", "))") }
            let defaultModel = ModelCatalog.defaultModel(in: directory)
            for name in names {
                do {
                    let reference = try ModelCatalog.resolve(name, in: directory)
                    let card = reference.card
                    if json {
                        let object: [String: Any] = [
                            "name": card.name, "input_size": card.input.size, "mpp": card.input.mpp ?? NSNull(),
                            "classes": card.classes, "params": card.params ?? NSNull(), "macs": card.macs ?? NSNull(),
                            "default": name == defaultModel, "folder": reference.folder,
                            "role": card.role ?? NSNull(), "experimental": card.experimental ?? false,
                            "validated": card.validationStatement ?? false,
                            "balanced_accuracy": card.realLabelBalancedAccuracy ?? NSNull(),
                            "task": card.task ?? "classification",
                        ]
                        let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
                        print(String(decoding: data, as: UTF8.self))
                    } else {
                        var tags: [String] = []
                        if name == defaultModel { tags.append("default") }
                        if let role = card.role { tags.append(role) }
                        if card.experimental == true { tags.append("experimental") }
                        if card.isSegmentation { tags.append("segmentation") }
                        let marker = tags.isEmpty ? "" : " (\(tags.joined(separator: ", ")))"
                        let macs = card.macs.map { String(format: "%.2f GMACs", Double($0) / 1e9) } ?? "? MACs"
                        let params = card.params.map { String(format: "%.2f M params", Double($0) / 1e6) } ?? "? params"
                        print("\(name)\(marker): \(card.displayName ?? card.name)")
                        print("    \(card.input.size) px at "
                              + (card.input.mpp.map { String(format: "%.3g um/px", $0) } ?? "? um/px")
                              + "; \(card.classes.count) classes (\(card.classes.joined(separator: ", "))); \(params), \(macs)")
                        print("    validated: \(card.validationStatement ?? "false (no real-label validation on its card)")")
                        print("    folder: \(reference.folder)")
                    }
                } catch {
                    print("\(name): \(error)")
                }
            }
        }
    }

    /// `tessera models inspect NAME`: the whole card.
    struct Inspect: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print a model's card (model.json).")

        @Argument(help: "Model name under models/ or a model folder.") var name: String

        func run() throws {
            do {
                let reference = try ModelCatalog.resolve(name)
                guard let data = reference.cardJSON else {
                    print("\(reference.name): no card (a bare .onnx file)")
                    return
                }
                print(String(decoding: data, as: UTF8.self))
            } catch {
                printError("\(error)")
                throw ExitCode.failure
            }
        }
    }
}
