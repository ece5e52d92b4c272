import Foundation

extension ModelCard {
    /// Whether the network's output is raw logits (Tessera then applies the softmax).
    public var outputsLogits: Bool { output?.kind == "logits" }

    /// One image's output turned into class probabilities: `softmax(logits / temperature)` for a
    /// logits output (the temperature from the card's calibration), the values as they are for a
    /// probabilities output.
    public func probabilities(fromOutput values: [Float]) -> [Float] {
        guard outputsLogits else { return values }
        let t = temperature
        let scaled = t == 1 ? values : values.map { $0 / t }
        let top = scaled.max() ?? 0
        let exps = scaled.map { Foundation.exp($0 - top) }
        let sum = exps.reduce(0, +)
        return exps.map { $0 / sum }
    }
}
