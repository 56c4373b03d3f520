-- Dynamic shares (libs/floodgate/_membership.py): each running process of a service registers here
-- and heartbeats; the live members divide each provider's global limit. One row per service holds
-- the current generation (its set of members), locked by every heartbeat so that renewing leases,
-- counting out expired members and starting a new generation happen as one step.
CREATE TABLE floodgate_membership (
    service     text PRIMARY KEY,
    generation  bigint NOT NULL DEFAULT 0,
    members     text[] NOT NULL DEFAULT '{}',
    changed_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE floodgate_members (
    service           text NOT NULL REFERENCES floodgate_membership (service),
    member_id         text NOT NULL,
    info              text NOT NULL DEFAULT '',    -- host and pid, for operators
    acked_generation  bigint NOT NULL DEFAULT 0,   -- the generation whose share its gates respect
    joined_at         timestamptz NOT NULL DEFAULT clock_timestamp(),
    heartbeat_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    expires_at        timestamptz NOT NULL,        -- the lease: counted out after this
    PRIMARY KEY (service, member_id)
);
