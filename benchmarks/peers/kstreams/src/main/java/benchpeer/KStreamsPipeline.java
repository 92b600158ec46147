package benchpeer;

import benchpeer.Contract.Parsed;
import benchpeer.Contract.ServiceInfo;
import java.io.IOException;
import java.io.PrintStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicReference;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.common.errors.TopicExistsException;
import org.apache.kafka.common.serialization.Deserializer;
import org.apache.kafka.common.serialization.Serde;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.serialization.Serializer;
import org.apache.kafka.common.utils.AppInfoParser;
import org.apache.kafka.common.utils.Bytes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.KeyValue;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.Topology;
import org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler.StreamThreadExceptionResponse;
import org.apache.kafka.streams.kstream.Branched;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.GlobalKTable;
import org.apache.kafka.streams.kstream.Grouped;
import org.apache.kafka.streams.kstream.KStream;
import org.apache.kafka.streams.kstream.Materialized;
import org.apache.kafka.streams.kstream.Named;
import org.apache.kafka.streams.kstream.Produced;
import org.apache.kafka.streams.kstream.Suppressed;
import org.apache.kafka.streams.kstream.TimeWindows;
import org.apache.kafka.streams.processor.api.FixedKeyProcessor;
import org.apache.kafka.streams.processor.api.FixedKeyProcessorContext;
import org.apache.kafka.streams.processor.api.FixedKeyRecord;
import org.apache.kafka.streams.state.WindowStore;

/**
 * The benchmark pipeline in Kafka Streams, written the way its documentation shows.
 *
 * <pre>
 *   input (String key = source, byte[] value)
 *     -> mapValues(validate)          stream.models.Event's contract (Contract.parse)
 *     -> split: invalid -> raw bytes -> DLQ topic
 *               valid   -> leftJoin(GlobalKTable over the reference topic) -> enriched topic
 *                       -> filter(error|critical) -> event time as record timestamp
 *                          -> groupByKey -> 60 s tumbling window, 10 s grace -> count()
 *                          -> suppress(untilWindowCloses) -> count >= 5 -> correlations topic
 * </pre>
 *
 * The rule is the worker's default (stream/windows/spec.py DEFAULT_RULES). Records are keyed
 * by their source, so grouping needs no repartition topic. Late records (past the grace) are
 * dropped by the window, as Kafka Streams does.
 *
 * <p>Run: with {@code --warmup-records N} (N &gt; 0) the same topology first runs under its own
 * application id ({@code <group>-warmup}) over the first N records of the input (or of
 * {@code --warmup-input}) into separate {@code <topic>.warmup} output topics, so the JIT has
 * compiled the hot path; then the timed run
 * (application id {@code <group>}) processes {@code --expect} records. The timed figure runs from
 * the timed run's first input record to the moment its last one has been handed to the
 * producer (as the Python peers time themselves); then Kafka Streams is closed, which flushes.
 * One JSON line goes to stdout; logs go to stderr.
 */
public final class KStreamsPipeline {
  static final String RULE_NAME = "errors_per_source";

  static final class Args {
    String bootstrap;
    String input;
    String warmupInput;
    String enriched;
    String correlations;
    String dlq;
    String reference;
    String group;
    long expect;
    long warmupRecords;
    int threads = 1;
    long windowMs = 60_000;
    long graceMs = 10_000;
    long threshold = 5;
    double timeoutS = 600;
    String stateDir;
  }

  /** Counters of one KafkaStreams instance (shared by its stream threads). */
  static final class Tally {
    final long expect;
    final AtomicLong valid = new AtomicLong();
    final AtomicLong dlq = new AtomicLong();
    final AtomicLong correlations = new AtomicLong();
    final AtomicLong firstNanos = new AtomicLong();
    final AtomicLong lastNanos = new AtomicLong();
    final CountDownLatch done = new CountDownLatch(1);

    Tally(long expect) {
      this.expect = expect;
    }

    void sawInput() {
      if (firstNanos.get() == 0) {
        firstNanos.compareAndSet(0, System.nanoTime());
      }
    }

    void handled(AtomicLong counter) {
      counter.incrementAndGet();
      if (valid.get() + dlq.get() >= expect && done.getCount() > 0) {
        lastNanos.compareAndSet(0, System.nanoTime());
        done.countDown();
      }
    }

    long events() {
      return valid.get() + dlq.get();
    }

    double seconds() {
      long last = lastNanos.get() != 0 ? lastNanos.get() : System.nanoTime();
      return firstNanos.get() == 0 ? 0.0 : (last - firstNanos.get()) / 1e9;
    }
  }

  public static void main(String[] argv) throws Exception {
    PrintStream out = System.out;
    System.setOut(System.err); // stdout carries the result line only
    Args args = parseArgs(argv);
    Map<String, Object> result = new HashMap<>();
    result.put("peer", "kstreams");
    result.put("threads", args.threads);
    result.put("kafka_streams", AppInfoParser.getVersion());
    result.put("java", System.getProperty("java.version"));
    long deadline = System.nanoTime() + (long) (args.timeoutS * 1e9);
    int code = 0;
    try {
      if (args.warmupRecords > 0) {
        List<String> warmupTopics =
            List.of(args.enriched + ".warmup", args.dlq + ".warmup", args.correlations + ".warmup");
        String warmupInput = args.warmupInput != null ? args.warmupInput : args.input;
        createLike(args.bootstrap, warmupInput, warmupTopics);
        Tally warm = new Tally(args.warmupRecords);
        run(args, args.group + "-warmup", warmupInput, warmupTopics.get(0), warmupTopics.get(1),
            warmupTopics.get(2), warm, deadline);
        Map<String, Object> w = new HashMap<>();
        w.put("records", warm.events());
        w.put("seconds", round(warm.seconds()));
        w.put("events_per_s", rate(warm));
        result.put("warmup", w);
      }
      Tally tally = new Tally(args.expect);
      run(args, args.group, args.input, args.enriched, args.dlq, args.correlations, tally,
          deadline);
      result.put("events", tally.events());
      result.put("seconds", round(tally.seconds()));
      result.put("events_per_s", rate(tally));
      result.put("valid", tally.valid.get());
      result.put("dlq", tally.dlq.get());
      result.put("correlations", tally.correlations.get());
      if (tally.events() < args.expect) {
        result.put("timed_out", true);
        code = 1;
      }
    } catch (Exception e) {
      e.printStackTrace();
      result.put("error", e.toString());
      code = 1;
    }
    result.put("peak_rss_bytes", peakRssBytes());
    out.println(Contract.MAPPER.writeValueAsString(result));
    out.flush();
    System.exit(code);
  }

  static double round(double v) {
    return Math.round(v * 1000) / 1000.0;
  }

  static double rate(Tally t) {
    double s = t.seconds();
    return s > 0 ? Math.round(t.events() / s * 10) / 10.0 : 0.0;
  }

  /** Run one KafkaStreams instance until {@code tally.expect} records are handled, then close. */
  static void run(
      Args args,
      String applicationId,
      String input,
      String enriched,
      String dlq,
      String correlations,
      Tally tally,
      long deadline)
      throws Exception {
    Topology topology = topology(args, input, enriched, dlq, correlations, tally);
    Properties props = new Properties();
    props.put(StreamsConfig.APPLICATION_ID_CONFIG, applicationId);
    props.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, args.bootstrap);
    props.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, args.threads);
    props.put(StreamsConfig.DEFAULT_KEY_SERDE_CLASS_CONFIG, Serdes.ByteArraySerde.class);
    props.put(StreamsConfig.DEFAULT_VALUE_SERDE_CLASS_CONFIG, Serdes.ByteArraySerde.class);
    props.put(StreamsConfig.STATE_DIR_CONFIG, stateDir(args).toString());
    AtomicReference<Throwable> failure = new AtomicReference<>();
    try (KafkaStreams streams = new KafkaStreams(topology, props)) {
      streams.setUncaughtExceptionHandler(
          e -> {
            failure.compareAndSet(null, e);
            tally.done.countDown();
            return StreamThreadExceptionResponse.SHUTDOWN_CLIENT;
          });
      streams.setStateListener(
          (now, before) -> {
            if (now == KafkaStreams.State.ERROR) {
              failure.compareAndSet(null, new IllegalStateException("Kafka Streams is in ERROR"));
              tally.done.countDown();
            }
          });
      streams.start();
      long waitNanos = Math.max(deadline - System.nanoTime(), 1);
      tally.done.await(waitNanos, TimeUnit.NANOSECONDS);
      streams.close(Duration.ofSeconds(60));
    }
    if (failure.get() != null) {
      throw new IllegalStateException(applicationId + " failed", failure.get());
    }
  }

  static Topology topology(
      Args args,
      String inputTopic,
      String enrichedTopic,
      String dlqTopic,
      String correlationsTopic,
      Tally tally) {
    Serde<String> strings = Serdes.String();
    Serde<byte[]> bytes = Serdes.ByteArray();
    StreamsBuilder builder = new StreamsBuilder();

    GlobalKTable<String, ServiceInfo> services =
        builder.globalTable(args.reference, Consumed.with(strings, serviceInfoSerde()));

    Map<String, KStream<String, Parsed>> branches =
        builder.stream(inputTopic, Consumed.with(strings, bytes))
            .peek((k, v) -> tally.sawInput(), Named.as("count-input"))
            .mapValues(Contract::parse, Named.as("validate"))
            .split(Named.as("contract-"))
            .branch((k, v) -> !v.valid(), Branched.as("invalid"))
            .defaultBranch(Branched.as("valid"));

    branches
        .get("contract-invalid")
        .mapValues(v -> v.raw, Named.as("raw-value"))
        .peek((k, v) -> tally.handled(tally.dlq), Named.as("count-dlq"))
        .to(dlqTopic, Produced.with(strings, bytes));

    KStream<String, Parsed> valid = branches.get("contract-valid");
    valid
        .leftJoin(
            services, (key, event) -> event.source, Contract::enrich, Named.as("enrich"))
        .peek((k, v) -> tally.handled(tally.valid), Named.as("count-enriched"))
        .to(enrichedTopic, Produced.with(strings, bytes));

    valid
        .filter((k, v) -> v.isError(), Named.as("errors"))
        .processValues(EventTime::new, Named.as("event-time"))
        .groupByKey(Grouped.keySerde(strings))
        .windowedBy(
            TimeWindows.ofSizeAndGrace(
                Duration.ofMillis(args.windowMs), Duration.ofMillis(args.graceMs)))
        .count(
            Materialized.<String, Long, WindowStore<Bytes, byte[]>>as("error-counts")
                .withKeySerde(strings)
                .withValueSerde(Serdes.Long()))
        .suppress(Suppressed.untilWindowCloses(Suppressed.BufferConfig.unbounded()))
        .toStream(Named.as("closed-windows"))
        .filter((window, count) -> count >= args.threshold, Named.as("threshold"))
        .map(
            (window, count) ->
                KeyValue.pair(
                    window.key(),
                    Contract.correlation(
                        RULE_NAME,
                        window.key(),
                        window.window().start(),
                        window.window().end(),
                        count)),
            Named.as("correlation"))
        .peek((k, v) -> tally.correlations.incrementAndGet(), Named.as("count-correlations"))
        .to(correlationsTopic, Produced.with(strings, bytes));

    return builder.build();
  }

  /** Stamps each error event with its event time, which the window then uses. */
  static final class EventTime implements FixedKeyProcessor<String, Parsed, Parsed> {
    private FixedKeyProcessorContext<String, Parsed> context;

    @Override
    public void init(FixedKeyProcessorContext<String, Parsed> context) {
      this.context = context;
    }

    @Override
    public void process(FixedKeyRecord<String, Parsed> record) {
      context.forward(record.withTimestamp(record.value().eventTimeMs));
    }
  }

  static Serde<ServiceInfo> serviceInfoSerde() {
    Serializer<ServiceInfo> serializer =
        (topic, info) -> {
          try {
            return info == null ? null : Contract.MAPPER.writeValueAsBytes(info);
          } catch (IOException e) {
            throw new IllegalArgumentException(e);
          }
        };
    Deserializer<ServiceInfo> deserializer =
        (topic, data) -> {
          try {
            return data == null ? null : Contract.MAPPER.readValue(data, ServiceInfo.class);
          } catch (IOException e) {
            return null; // a malformed reference record enriches as an unknown service
          }
        };
    return Serdes.serdeFrom(serializer, deserializer);
  }

  /** Create {@code topics} with as many partitions as {@code like} (existing ones are kept). */
  static void createLike(String bootstrap, String like, List<String> topics)
      throws InterruptedException, ExecutionException {
    Map<String, Object> conf = Map.of(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
    try (Admin admin = Admin.create(conf)) {
      int partitions =
          admin.describeTopics(List.of(like)).allTopicNames().get().get(like).partitions().size();
      List<NewTopic> specs = new ArrayList<>();
      for (String name : topics) {
        specs.add(new NewTopic(name, Optional.of(partitions), Optional.empty()));
      }
      for (var future : admin.createTopics(specs).values().values()) {
        try {
          future.get();
        } catch (ExecutionException e) {
          if (!(e.getCause() instanceof TopicExistsException)) {
            throw e;
          }
        }
      }
    }
  }

  static Path stateDir(Args args) throws IOException {
    if (args.stateDir != null) {
      Path dir = Path.of(args.stateDir);
      Files.createDirectories(dir);
      return dir;
    }
    return Files.createTempDirectory("kstreams-peer-state-");
  }

  /** VmHWM of this process: the most resident memory it has had. */
  static long peakRssBytes() {
    try {
      for (String line : Files.readAllLines(Path.of("/proc/self/status"))) {
        if (line.startsWith("VmHWM:")) {
          return Long.parseLong(line.replaceAll("[^0-9]", "")) * 1024;
        }
      }
    } catch (IOException | NumberFormatException e) {
      // not Linux: unknown
    }
    return 0;
  }

  static Args parseArgs(String[] argv) {
    Args a = new Args();
    for (int i = 0; i < argv.length; i++) {
      String flag = argv[i];
      if (flag.equals("--help") || flag.equals("-h")) {
        System.err.println(
            "usage: java -jar kstreams-peer.jar --bootstrap B --input T --enriched T2"
                + " --correlations T3 --dlq T4 --reference T5 --group G --expect N"
                + " [--warmup-records N] [--warmup-input T] [--threads 1] [--window-ms 60000] [--grace-ms 10000]"
                + " [--threshold 5] [--timeout 600] [--state-dir DIR]");
        System.exit(0);
      }
      if (i + 1 >= argv.length) {
        usage("missing value for " + flag);
      }
      String v = argv[++i];
      switch (flag) {
        case "--bootstrap" -> a.bootstrap = v;
        case "--input" -> a.input = v;
        case "--warmup-input" -> a.warmupInput = v;
        case "--enriched" -> a.enriched = v;
        case "--correlations" -> a.correlations = v;
        case "--dlq" -> a.dlq = v;
        case "--reference" -> a.reference = v;
        case "--group" -> a.group = v;
        case "--expect" -> a.expect = Long.parseLong(v);
        case "--warmup-records" -> a.warmupRecords = Long.parseLong(v);
        case "--threads" -> a.threads = Integer.parseInt(v);
        case "--window-ms" -> a.windowMs = Long.parseLong(v);
        case "--grace-ms" -> a.graceMs = Long.parseLong(v);
        case "--threshold" -> a.threshold = Long.parseLong(v);
        case "--timeout" -> a.timeoutS = Double.parseDouble(v);
        case "--state-dir" -> a.stateDir = v;
        default -> usage("unknown flag " + flag);
      }
    }
    if (a.bootstrap == null || a.input == null || a.enriched == null || a.correlations == null
        || a.dlq == null || a.reference == null || a.group == null || a.expect <= 0) {
      usage("--bootstrap, --input, --enriched, --correlations, --dlq, --reference, --group and"
          + " --expect are required");
    }
    return a;
  }

  static void usage(String message) {
    System.err.println("kstreams-peer: " + message + " (--help for usage)");
    System.exit(2);
  }
}
