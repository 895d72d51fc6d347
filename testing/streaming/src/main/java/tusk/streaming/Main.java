package tusk.streaming;

import java.io.File;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.Comparator;
import java.util.stream.Stream;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.mapred.Counters;
import org.apache.hadoop.mapred.RunningJob;
import org.apache.hadoop.streaming.StreamJob;
import org.apache.hadoop.util.ToolRunner;

/**
 * Runs one Hadoop Streaming job ({@link StreamJob}, exactly what {@code hadoop jar
 * hadoop-streaming.jar} runs) with the local job runner against an HDFS.
 *
 * <p>Arguments: {@code FS_URL STREAMJOB_ARGS...}, e.g. {@code hdfs://127.0.0.1:PORT -input in
 * -output out -mapper "cmd" -numReduceTasks 0}. After the job it prints one line per counter,
 * {@code Counter GROUP NAME VALUE}, then {@code Exit CODE}, and exits with StreamJob's code.
 */
public final class Main {
  private Main() {}

  /** StreamJob with access to the job it ran, for its counters. */
  private static final class Job extends StreamJob {
    RunningJob running() {
      return running_;
    }
  }

  private static void deleteTree(Path root) throws IOException {
    try (Stream<Path> paths = Files.walk(root)) {
      for (Path p : paths.sorted(Comparator.reverseOrder()).toList()) {
        Files.deleteIfExists(p);
      }
    }
  }

  public static void main(String[] args) throws Exception {
    if (args.length < 1) {
      System.err.println("usage: Main FS_URL STREAMJOB_ARGS...");
      System.exit(2);
    }
    Configuration conf = new Configuration();
    conf.set("fs.defaultFS", args[0]);
    conf.set("mapreduce.framework.name", "local");
    // Job staging and task scratch space of this run only (the staging dir lives on HDFS).
    File tmp = Files.createTempDirectory("tusk-streaming").toFile();
    conf.set("hadoop.tmp.dir", tmp.getAbsolutePath());
    Job job = new Job();
    int rc = ToolRunner.run(conf, job, Arrays.copyOfRange(args, 1, args.length));
    RunningJob running = job.running();
    Counters counters = running == null ? null : running.getCounters();
    if (counters != null) {
      for (Counters.Group group : counters) {
        for (Counters.Counter c : group) {
          System.out.println(
              "Counter " + group.getName() + " " + c.getName() + " " + c.getCounter());
        }
      }
    }
    deleteTree(tmp.toPath());
    System.out.println("Exit " + rc);
    System.out.flush();
    System.exit(rc);
  }
}
