-- Dynamic shares: a heartbeat (and a leave) as one server-side call, so that it costs one round trip.
-- A loaded service process gets few turns of its event loop; a heartbeat of several statements needs
-- a turn for each, and one that cannot get through in time makes the process fence itself.
-- Same steps as before (libs/floodgate/_membership_pg.py): lock the service's row, renew the
-- member's lease and ack, count out the expired, start a new generation if the live set changed.

CREATE FUNCTION floodgate_membership_recount(p_service text)
RETURNS TABLE (generation bigint, member_id text, acked_generation bigint)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_generation bigint;
    v_members text[];
    v_live text[];
BEGIN
    SELECT s.generation, s.members INTO v_generation, v_members
      FROM floodgate_membership s WHERE s.service = p_service FOR UPDATE;
    DELETE FROM floodgate_members m WHERE m.service = p_service AND m.expires_at < clock_timestamp();
    SELECT coalesce(array_agg(m.member_id ORDER BY m.member_id), '{}') INTO v_live
      FROM floodgate_members m WHERE m.service = p_service;
    IF v_live IS DISTINCT FROM (SELECT coalesce(array_agg(x ORDER BY x), '{}') FROM unnest(v_members) x) THEN
        v_generation := v_generation + 1;
        UPDATE floodgate_membership s
           SET generation = v_generation, members = v_live, changed_at = clock_timestamp()
         WHERE s.service = p_service;
    END IF;
    RETURN QUERY
        SELECT v_generation, m.member_id, m.acked_generation
          FROM floodgate_members m WHERE m.service = p_service;
    IF NOT FOUND THEN
        RETURN QUERY SELECT v_generation, NULL::text, NULL::bigint;
    END IF;
END
$$;

CREATE FUNCTION floodgate_membership_heartbeat(
    p_service text, p_member text, p_acked bigint, p_expiry double precision, p_info text
)
RETURNS TABLE (generation bigint, member_id text, acked_generation bigint)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
    INSERT INTO floodgate_membership (service) VALUES (p_service) ON CONFLICT (service) DO NOTHING;
    PERFORM 1 FROM floodgate_membership s WHERE s.service = p_service FOR UPDATE;
    INSERT INTO floodgate_members AS m (service, member_id, info, acked_generation, expires_at)
    VALUES (p_service, p_member, p_info, p_acked, clock_timestamp() + make_interval(secs => p_expiry))
    ON CONFLICT ON CONSTRAINT floodgate_members_pkey DO UPDATE
       SET acked_generation = EXCLUDED.acked_generation,
           heartbeat_at = clock_timestamp(),
           expires_at = EXCLUDED.expires_at;
    RETURN QUERY SELECT * FROM floodgate_membership_recount(p_service);
END
$$;

CREATE FUNCTION floodgate_membership_leave(p_service text, p_member text)
RETURNS void
LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
    INSERT INTO floodgate_membership (service) VALUES (p_service) ON CONFLICT (service) DO NOTHING;
    PERFORM 1 FROM floodgate_membership s WHERE s.service = p_service FOR UPDATE;
    DELETE FROM floodgate_members m WHERE m.service = p_service AND m.member_id = p_member;
    PERFORM * FROM floodgate_membership_recount(p_service);
END
$$;
