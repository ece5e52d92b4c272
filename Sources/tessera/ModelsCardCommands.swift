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
            if names.isEmpty { print("no models in \(directory)") }
            for name in names {
                do {
                    let reference = try ModelCatalog.resolve(name, in: directory)
                    let card = reference.card
                    if json {
                        let object: [String: Any] = [
                            "name": card.name, "input_size": card.input.size, "mpp": card.input.mpp ?? NSNull(),
                            "classes": card.classes, "params": card.params ?? NSNull(), "macs": card.macs ?? NSNull(),
                            "default": name == ModelCatalog.defaultModel,
                        ]
                        let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
                        print(String(decoding: data, as: UTF8.self))
                    } else {
                        let marker = name == ModelCatalog.defaultModel ? " (default)" : ""
                        let macs = card.macs.map { String(format: "%.2f GMACs", Double($0) / 1e9) } ?? "? MACs"
                        let params = card.params.map { String(format: "%.2f M params", Double($0) / 1e6) } ?? "? params"
                        print("\(name)\(marker): \(card.displayName ?? card.name); \(card.input.size) px at "
                              + (card.input.mpp.map { String(format: "%.2f um/px", $0) } ?? "? um/px")
                              + "; \(card.classes.count) classes; \(params), \(macs)")
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
