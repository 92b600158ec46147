package benchpeer;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.DeserializationFeature;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.IOException;
import java.time.OffsetDateTime;
import java.time.format.DateTimeFormatter;
import java.time.format.DateTimeParseException;
import java.util.Iterator;
import java.util.Map;

/**
 * The input contract and the enrichment, as the Python rows apply them.
 *
 * <p>Validation follows {@code stream.models.Event} (msgspec) and the event-time bounds of
 * {@code stream.stages.validate}, field by field, so that every row agrees with the load
 * generator's ground truth:
 *
 * <pre>
 *   one JSON object (nothing after it)
 *   event_id, type, source   non-empty strings, required
 *   timestamp                required: a JSON integer (epoch ms) or an RFC 3339 string WITH an offset
 *   severity                 required: debug | info | warning | error | critical
 *   entity, trace_id         optional string (or null)
 *   value                    optional number (or null), not a boolean or a string
 *   attributes               optional object (or null) of string | number | boolean values
 *   event time               2000-01-01 &lt;= t &lt;= now + 24 h
 * </pre>
 *
 * Unknown fields are kept, as the worker keeps them. The enriched output is the input object
 * plus {@code event_time_ms} and {@code enrichment} ({@code benchmarks/peers/common.py}).
 */
public final class Contract {
  static final ObjectMapper MAPPER =
      new ObjectMapper().enable(DeserializationFeature.FAIL_ON_TRAILING_TOKENS);

  static final long MIN_EVENT_TIME_MS = 946_684_800_000L; // 2000-01-01
  static final long MAX_FUTURE_MS = 24L * 3600 * 1000;

  private Contract() {}

  /** A record after validation: {@code event} is null for a record that breaks the contract. */
  public static final class Parsed {
    final byte[] raw;
    final ObjectNode event;
    final String source;
    final String severity;
    final long eventTimeMs;

    Parsed(byte[] raw, ObjectNode event, String source, String severity, long eventTimeMs) {
      this.raw = raw;
      this.event = event;
      this.source = source;
      this.severity = severity;
      this.eventTimeMs = eventTimeMs;
    }

    boolean valid() {
      return event != null;
    }

    boolean isError() {
      return "error".equals(severity) || "critical".equals(severity);
    }
  }

  /** A reference record ({@code {"team", "tier", "owner"}}), the GlobalKTable's value. */
  public static final class ServiceInfo {
    public String team;
    public Integer tier;
    public String owner;
  }

  static int severityRank(String severity) {
    switch (severity) {
      case "debug":
        return 0;
      case "info":
        return 1;
      case "warning":
        return 2;
      case "error":
        return 3;
      case "critical":
        return 4;
      default:
        return -1;
    }
  }

  public static Parsed parse(byte[] raw) {
    Parsed invalid = new Parsed(raw, null, null, null, 0);
    if (raw == null || raw.length == 0) {
      return invalid;
    }
    JsonNode node;
    try {
      node = MAPPER.readTree(raw);
    } catch (IOException e) {
      return invalid;
    }
    if (!(node instanceof ObjectNode)) {
      return invalid;
    }
    ObjectNode event = (ObjectNode) node;
    if (!nonEmptyString(event.get("event_id"))
        || !nonEmptyString(event.get("type"))
        || !nonEmptyString(event.get("source"))) {
      return invalid;
    }
    JsonNode severity = event.get("severity");
    if (severity == null || !severity.isTextual() || severityRank(severity.textValue()) < 0) {
      return invalid;
    }
    if (!optionalString(event.get("entity"))
        || !optionalString(event.get("trace_id"))
        || !optionalNumber(event.get("value"))
        || !optionalAttributes(event.get("attributes"))) {
      return invalid;
    }
    Long eventTime = eventTimeMs(event.get("timestamp"));
    if (eventTime == null
        || eventTime < MIN_EVENT_TIME_MS
        || eventTime > System.currentTimeMillis() + MAX_FUTURE_MS) {
      return invalid;
    }
    return new Parsed(
        raw, event, event.get("source").textValue(), severity.textValue(), eventTime);
  }

  private static boolean nonEmptyString(JsonNode node) {
    return node != null && node.isTextual() && !node.textValue().isEmpty();
  }

  private static boolean optionalString(JsonNode node) {
    return node == null || node.isNull() || node.isTextual();
  }

  private static boolean optionalNumber(JsonNode node) {
    return node == null || node.isNull() || node.isNumber();
  }

  private static boolean optionalAttributes(JsonNode node) {
    if (node == null || node.isNull()) {
      return true;
    }
    if (!node.isObject()) {
      return false;
    }
    for (Iterator<Map.Entry<String, JsonNode>> it = node.fields(); it.hasNext(); ) {
      JsonNode value = it.next().getValue();
      if (!(value.isTextual() || value.isNumber() || value.isBoolean())) {
        return false;
      }
    }
    return true;
  }

  /** Epoch ms from a JSON integer or an RFC 3339 string with an offset; null otherwise. */
  private static Long eventTimeMs(JsonNode node) {
    if (node == null) {
      return null;
    }
    if (node.isIntegralNumber()) {
      return node.canConvertToLong() ? node.longValue() : null;
    }
    if (node.isTextual()) {
      try {
        return OffsetDateTime.parse(node.textValue(), DateTimeFormatter.ISO_OFFSET_DATE_TIME)
            .toInstant()
            .toEpochMilli();
      } catch (DateTimeParseException e) {
        return null;
      }
    }
    return null;
  }

  /** score = (severity rank + 1) x tier weight (tiers 1/2/3 weigh 3/2/1, others 1). */
  static double tierWeight(Integer tier) {
    if (tier == null) {
      return 1.0;
    }
    switch (tier) {
      case 1:
        return 3.0;
      case 2:
        return 2.0;
      case 3:
        return 1.0;
      default:
        return 1.0;
    }
  }

  /** The enriched record's JSON: the input event plus event_time_ms and enrichment. */
  public static byte[] enrich(Parsed parsed, ServiceInfo info) {
    double rank = severityRank(parsed.severity) + 1;
    ObjectNode enrichment = MAPPER.createObjectNode();
    if (info == null) {
      enrichment.put("known_service", false);
      enrichment.put("score", rank);
    } else {
      enrichment.put("known_service", true);
      enrichment.put("score", rank * tierWeight(info.tier));
      enrichment.put("team", info.team);
      enrichment.put("tier", info.tier);
      enrichment.put("owner", info.owner);
    }
    ObjectNode out = parsed.event;
    out.put("event_time_ms", parsed.eventTimeMs);
    out.set("enrichment", enrichment);
    try {
      return MAPPER.writeValueAsBytes(out);
    } catch (JsonProcessingException e) {
      throw new IllegalStateException(e);
    }
  }

  /** The correlation record, as {@code benchmarks.peers.common.correlation}. */
  public static byte[] correlation(
      String rule, String source, long startMs, long endMs, long count) {
    ObjectNode out = MAPPER.createObjectNode();
    out.put("rule", rule);
    out.put("kind", "threshold");
    out.putObject("group").put("source", source);
    out.put("window_start", startMs);
    out.put("window_end", endMs);
    out.put("aggregate", "count");
    out.put("value", (double) count);
    out.put("count", count);
    try {
      return MAPPER.writeValueAsBytes(out);
    } catch (JsonProcessingException e) {
      throw new IllegalStateException(e);
    }
  }
}
