import Foundation
import Testing
@testable import TesseraCore

/// The API's side of the one intake: per-job parameters, retries, idempotency, auth on every page.
@Suite("HTTP API intake", .serialized)
struct APIIntakeTests {
    func waitForFinal(_ client: HTTPClient, _ location: String) throws -> [String: Any] {
        let deadline = Date().addingTimeInterval(90)
        var job: [String: Any] = [:]
        while Date() < deadline {
            job = try client.json("GET", location).1
            if ["done", "failed", "cancelled"].contains(job["state"] as? String ?? "") { break }
            Thread.sleep(forTimeInterval: 0.2)
        }
        return job
    }

    func errorCode(_ body: Data) -> String? {
        ((try? JSONSerialization.jsonObject(with: body)) as? [String: Any]).flatMap { ($0["error"] as? [String: Any])?["code"] as? String }
    }

    @Test func slideWithoutMPPNeedsTheSlideMPPParameter() throws {
        let (server, client, _) = try APITests.startServer()
        defer { server.stop() }
        let body = try Data(contentsOf: URL(fileURLWithPath: try Support.slideWithoutMPP()))
        let refused = try client.call("POST", "/v1/slides?filename=old.ppm", body: body)
        #expect(refused.status == 422 && errorCode(refused.body) == "missing_mpp")
        let message = String(decoding: refused.body, as: UTF8.self)
        #expect(message.contains("slide_mpp") && !message.contains("--slide-mpp"), "names the API parameter: \(message)")
        #expect(try client.call("POST", "/v1/slides?filename=old.ppm&slide_mpp=abc", body: body).status == 400)
        let accepted = try client.call("POST", "/v1/slides?filename=old.ppm&slide_mpp=0.5&min_tissue=0.3&embeddings=true", body: body)
        #expect(accepted.status == 202)
        let job = try waitForFinal(client, try #require(accepted.headers["location"]))
        #expect(job["state"] as? String == "done", "\(job)")
        let summary = try client.json("GET", try #require(accepted.headers["location"]) + "/result").1
        #expect(summary["slide_mpp_source"] as? String == "override", "the summary says the MPP was the stated fallback")
        let store = try DataDirectory.openStore(server.api.configuration.dataDirectory)
        let parameters = try AnalysisParameters.parse(try #require(try store.jobs().first).parameters)
        #expect(parameters.slideMPP == 0.5 && parameters.minTissue == 0.3 && parameters.embeddings)
    }

    @Test func aFailedJobIsReportedOnReuploadAndCanBeRetried() throws {
        let (server, client, _) = try APITests.startServer()
        defer { server.stop() }
        let models = server.api.configuration.modelsDirectory
        try Support.rewriteCard(models, "tiny", size: 2)
        let body = try Data(contentsOf: URL(fileURLWithPath: try Support.syntheticSlide(width: 1500, height: 1000, seed: 71)))
        let upload = try client.call("POST", "/v1/slides?filename=a.tif", body: body)
        let location = try #require(upload.headers["location"])
        let failed = try waitForFinal(client, location)
        #expect(failed["state"] as? String == "failed")
        #expect((failed["error"] as? [String: Any])?["code"] as? String == "model_error", "\(failed)")
        let again = try client.call("POST", "/v1/slides?filename=other-name.tif", body: body, headers: ["Idempotency-Key": "k-2"])
        #expect(again.status == 409 && again.headers["location"] == location)
        #expect(String(decoding: again.body, as: UTF8.self).contains(location + "/retry"))
        // The card is fixed in place (same identity for the stored job): the retry runs it to done.
        try Support.rewriteCard(models, "tiny", size: 32)
        let retry = try client.call("POST", location + "/retry")
        #expect(retry.status == 202)
        #expect(try waitForFinal(client, location)["state"] as? String == "done")
        #expect(try client.call("POST", location + "/retry").status == 409, "a done job is not retried")
    }

    @Test func idempotencyKeyWithAnotherBodyIsAConflict() throws {
        let (server, client, _) = try APITests.startServer(workers: 0)
        defer { server.stop() }
        let first = try Data(contentsOf: URL(fileURLWithPath: try Support.syntheticSlide(width: 1500, height: 1000, seed: 72)))
        let second = try Data(contentsOf: URL(fileURLWithPath: try Support.syntheticSlide(width: 1500, height: 1000, seed: 73)))
        #expect(try client.call("POST", "/v1/slides?filename=a.tif", body: first, headers: ["Idempotency-Key": "k1"]).status == 202)
        #expect(try client.call("POST", "/v1/slides?filename=a.tif", body: first, headers: ["Idempotency-Key": "k1"]).status == 200)
        let conflict = try client.call("POST", "/v1/slides?filename=b.tif", body: second, headers: ["Idempotency-Key": "k1"])
        #expect(conflict.status == 409 && errorCode(conflict.body) == "idempotency_conflict")
    }

    @Test func statusPageAndMetricsNeedTheTokenAndCountEveryTile() throws {
        let (server, client, _) = try APITests.startServer(tokens: ["t0k3n"])
        defer { server.stop() }
        #expect(try client.call("GET", "/").status == 401)
        #expect(try client.call("GET", "/metrics").status == 401)
        #expect(try client.call("GET", "/healthz").status == 200)
        var authorised = client
        authorised.token = "t0k3n"
        let body = try Data(contentsOf: URL(fileURLWithPath: try Support.syntheticSlide(width: 1500, height: 1000, seed: 74)))
        let upload = try authorised.call("POST", "/v1/slides?filename=a.tif", body: body)
        let location = try #require(upload.headers["location"])
        let job = try waitForFinal(authorised, location)
        let tiles = try #require((job["progress"] as? [String: Any])?["tiles_total"] as? Int)
        #expect(tiles > 0 && tiles < 64, "a job of one batch")
        #expect(try authorised.call("GET", "/").status == 200)
        let metrics = String(decoding: try authorised.call("GET", "/metrics").body, as: UTF8.self)
        #expect(metrics.contains("tessera_tiles_processed_total \(tiles)\n"), "every tile counted")
        #expect(metrics.contains("tessera_model_tiles_processed_total{model=\"tiny\"} \(tiles)"))
        #expect(metrics.contains("tessera_job_duration_seconds_count 1") && metrics.contains("tessera_build_info{version="))
        let overlay = try authorised.call("GET", location + "/overlay.png")
        let tag = try #require(overlay.headers["etag"])
        #expect(overlay.status == 200 && overlay.headers["cache-control"]?.contains("max-age") == true)
        #expect(try authorised.call("GET", location + "/overlay.png", headers: ["If-None-Match": tag]).status == 304)
    }

    @Test func listLimitsAreCheckedAndMethodsNamed() throws {
        let (server, client, _) = try APITests.startServer(workers: 0)
        defer { server.stop() }
        #expect(try client.call("GET", "/v1/jobs?offset=-1").status == 400)
        #expect(try client.call("GET", "/v1/jobs?limit=0").status == 400)
        #expect(try client.call("GET", "/v1/jobs?limit=10&offset=0").status == 200)
        let wrong = try client.call("DELETE", "/v1/models")
        #expect(wrong.status == 405 && wrong.headers["allow"] == "GET")
        let document = try client.call("GET", "/openapi.json")
        #expect(document.status == 200)
        #expect((try JSONSerialization.jsonObject(with: document.body) as? [String: Any])?["openapi"] != nil)
    }
}
