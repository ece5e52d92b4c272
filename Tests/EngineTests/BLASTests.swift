import Testing
@testable import LinearAlgebra

@Suite(.serialized) struct BLASThreadTests {
    @Test func setsThreadCount() {
        BLAS.setThreads(1)
        #expect(BLAS.threads == 1)
    }
}
