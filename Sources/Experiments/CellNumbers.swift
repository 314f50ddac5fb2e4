/// Cell numbers as schedulers write them: `3`, `0-7`, `0-3,5,9-11` (Slurm's `--array` syntax
/// without a step or a `%` limit). `run --cell` reads them; a Slurm array is written with them.
public enum CellNumbers {
    /// The numbers of every text (each a comma-separated list of numbers and ranges), sorted,
    /// without repeats. Throws `PlanError` naming the bad part.
    public static func parse(_ texts: [String]) throws -> [Int] {
        var numbers = Set<Int>()
        for text in texts {
            for part in text.split(separator: ",", omittingEmptySubsequences: false).map({ $0.trimmingCharacters(in: .whitespaces) }) {
                let bounds = part.split(separator: "-", omittingEmptySubsequences: false)
                guard (1...2).contains(bounds.count), let first = Int(bounds[0]), let last = Int(bounds[bounds.count - 1]) else {
                    throw PlanError("--cell: '\(part)' is not a cell number or a range N-M (e.g. --cell 3, --cell 0-7, --cell 0-3,5); `--list` prints the cells' numbers")
                }
                guard first >= 0, first <= last else {
                    throw PlanError("--cell: '\(part)' is not a range of cell numbers from 0 (the first must be at most the last)")
                }
                guard last - first < GridPlan.maxCells else { throw PlanError("--cell: '\(part)' spans more than \(GridPlan.maxCells) cells") }
                numbers.formUnion(first...last)
            }
        }
        return numbers.sorted()
    }

    /// `numbers` as the shortest list of ranges: [0, 1, 2, 3, 5, 9, 10] is "0-3,5,9-10".
    public static func compact(_ numbers: [Int]) -> String {
        var parts: [String] = []
        var i = 0
        let sorted = Array(Set(numbers)).sorted()
        while i < sorted.count {
            var j = i
            while j + 1 < sorted.count && sorted[j + 1] == sorted[j] + 1 { j += 1 }
            parts.append(i == j ? "\(sorted[i])" : "\(sorted[i])-\(sorted[j])")
            i = j + 1
        }
        return parts.joined(separator: ",")
    }
}
