/// Schema migrations, applied in order and recorded in `PRAGMA user_version`.
enum Migrator {
    static let migrations: [String] = [
        // 1: slides, jobs, their history and per-tile results.
        """
        CREATE TABLE slides(
            sha256 TEXT PRIMARY KEY,
            path TEXT NOT NULL,
            original_name TEXT NOT NULL,
            size INTEGER NOT NULL,
            created_at REAL NOT NULL
        );
        CREATE TABLE jobs(
            id INTEGER PRIMARY KEY,
            slide_sha256 TEXT NOT NULL REFERENCES slides(sha256),
            slide_name TEXT NOT NULL,
            model TEXT NOT NULL,
            parameters TEXT NOT NULL DEFAULT '{}',
            state TEXT NOT NULL CHECK (state IN ('queued', 'running', 'done', 'failed', 'cancelled')),
            attempts INTEGER NOT NULL DEFAULT 0,
            max_attempts INTEGER NOT NULL DEFAULT 3,
            run_after REAL NOT NULL,
            lease_owner TEXT,
            lease_token INTEGER NOT NULL DEFAULT 0,
            lease_expires REAL,
            heartbeat_at REAL,
            claim_progress INTEGER NOT NULL DEFAULT 0,
            tiles_done INTEGER NOT NULL DEFAULT 0,
            tiles_total INTEGER,
            error TEXT,
            output_dir TEXT,
            idempotency_key TEXT UNIQUE,
            created_at REAL NOT NULL,
            started_at REAL,
            finished_at REAL,
            updated_at REAL NOT NULL,
            UNIQUE (slide_sha256, model, parameters)
        );
        CREATE INDEX jobs_runnable ON jobs(state, run_after, id);
        CREATE TABLE job_events(
            id INTEGER PRIMARY KEY,
            job_id INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
            attempt INTEGER,
            message TEXT NOT NULL,
            at REAL NOT NULL
        );
        CREATE INDEX job_events_job ON job_events(job_id, id);
        CREATE TABLE tile_results(
            job_id INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
            tile_index INTEGER NOT NULL,
            scores BLOB NOT NULL,
            embedding BLOB,
            PRIMARY KEY (job_id, tile_index)
        ) WITHOUT ROWID;
        """,
        // 2: files seen by the watch-folder daemon, so restarts neither drop nor repeat slides.
        """
        CREATE TABLE watched_files(
            path TEXT PRIMARY KEY,
            size INTEGER NOT NULL,
            mtime REAL NOT NULL,
            sha256 TEXT,
            job_id INTEGER REFERENCES jobs(id),
            state TEXT NOT NULL,
            reason TEXT,
            updated_at REAL NOT NULL
        );
        CREATE INDEX watched_files_job ON watched_files(job_id);
        """,
        // 3: leases lost without progress (a worker or server that died), counted apart from attempts.
        """
        ALTER TABLE jobs ADD COLUMN interruptions INTEGER NOT NULL DEFAULT 0;
        """,
    ]

    /// Brings the schema to the latest version, one transaction per migration.
    static func migrate(_ db: SQLiteConnection) throws {
        try db.immediateTransaction {
            let version = try db.query("PRAGMA user_version").first?.int("user_version") ?? 0
            guard version < migrations.count else { return }
            for index in version..<migrations.count {
                try db.execute(migrations[index])
            }
            try db.execute("PRAGMA user_version = \(migrations.count)")
        }
    }

    /// The schema version this build writes.
    static var latestVersion: Int { migrations.count }
}
