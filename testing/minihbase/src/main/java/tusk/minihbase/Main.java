package tusk.minihbase;

import java.io.BufferedReader;
import java.io.File;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.PrintWriter;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.util.Comparator;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.stream.Stream;
import javax.servlet.Filter;
import javax.servlet.FilterChain;
import javax.servlet.FilterConfig;
import javax.servlet.ServletException;
import javax.servlet.ServletRequest;
import javax.servlet.ServletResponse;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.hbase.HBaseCommonTestingUtility;
import org.apache.hadoop.hbase.HBaseConfiguration;
import org.apache.hadoop.hbase.HBaseTestingUtility;
import org.apache.hadoop.hbase.HConstants;
import org.apache.hadoop.hbase.StartMiniClusterOption;
import org.apache.hadoop.hbase.rest.RESTServer;
import org.apache.hadoop.hbase.rest.filter.GzipFilter;
import org.apache.hadoop.hbase.thrift.ThriftServer;

/**
 * Starts HBase's mini cluster (ZooKeeper, one master, one region server; data on the local file
 * system under a temporary directory) with the REST gateway and the Thrift gateway in this JVM,
 * each on a free port of 127.0.0.1, prints one line {@code Ready! rest=PORT thrift=PORT zk=PORT}
 * on stdout, then obeys commands, one per line on stdin, each answered by one line ({@code ok
 * ...} or {@code error ...}). An empty line, or stdin closing (the parent going away), shuts
 * everything down.
 *
 * <p>The Thrift gateway is HBase's Thrift 1 API ({@code Hbase.Iface}, what happybase speaks) on
 * the thread-pool server: buffered (unframed) transport, binary protocol, happybase's defaults.
 *
 * <p>Commands, for fault tests:
 *
 * <ul>
 *   <li>{@code stop-rest}: stop the REST gateway (the cluster keeps running);
 *   <li>{@code start-rest}: start it again, on the same port;
 *   <li>{@code pause-rest MS}: for the next MS milliseconds the REST gateway accepts connections
 *       but holds every request until the pause is over.
 * </ul>
 */
public final class Main {
  private Main() {}

  public static void main(String[] args) throws Exception {
    File base = Files.createTempDirectory("tusk-minihbase").toFile();
    // HBaseTestingUtility homes everything (root dir, WALs, ZooKeeper, hadoop.tmp.dir) here.
    System.setProperty(HBaseCommonTestingUtility.BASE_TEST_DIRECTORY_KEY, base.getAbsolutePath());
    Configuration conf = HBaseConfiguration.create();
    // No HDFS here: the default WAL (asyncfs) speaks HDFS's DataNode protocol; the filesystem one
    // writes through Hadoop's FileSystem, the local one.
    conf.set("hbase.wal.provider", "filesystem");
    // No web UIs: fewer ports, faster start.
    conf.setInt(HConstants.MASTER_INFO_PORT, -1);
    conf.setInt(HConstants.REGIONSERVER_INFO_PORT, -1);
    // Small: a few handlers, a small block cache, memstores flushed at 32 MB.
    conf.setInt(HConstants.REGION_SERVER_HANDLER_COUNT, 10);
    conf.setInt("hbase.master.handler.count", 5);
    conf.setFloat("hfile.block.cache.size", 0.2f);
    conf.setLong(HConstants.HREGION_MEMSTORE_FLUSH_SIZE, 32L * 1024 * 1024);
    HBaseTestingUtility util = new HBaseTestingUtility(conf);
    util.startMiniZKCluster();
    util.startMiniHBaseCluster(
        StartMiniClusterOption.builder().numMasters(1).numRegionServers(1).build());
    int zk = util.getZkCluster().getClientPort();

    Configuration gateways = new Configuration(util.getConfiguration());
    Rest rest = new Rest(gateways);
    rest.start(0);

    Configuration tc = new Configuration(gateways);
    int thriftPort = freePort();
    tc.setInt("hbase.regionserver.thrift.port", thriftPort);
    tc.set("hbase.regionserver.thrift.ipaddress", "127.0.0.1");
    tc.set("hbase.regionserver.thrift.server.type", "threadpool");
    tc.setBoolean("hbase.regionserver.thrift.framed", false);
    tc.setBoolean("hbase.regionserver.thrift.compact", false);
    tc.setInt("hbase.thrift.info.port", -1);
    tc.setInt("hbase.thrift.minWorkerThreads", 2);
    ThriftServer thrift = new ThriftServer(tc);
    Thread serving = new Thread(() -> {
      try {
        thrift.run(new String[0]);
      } catch (Exception e) {
        System.err.println("Thrift gateway failed: " + e);
      }
    }, "thrift-gateway");
    serving.setDaemon(true);
    serving.start();
    awaitListening(thriftPort, serving);
    System.err.println("Thrift 1 gateway on 127.0.0.1:" + thriftPort
        + ": buffered transport, binary protocol");

    AtomicBoolean down = new AtomicBoolean();
    Runnable shutdown = () -> {
      if (down.getAndSet(true)) {
        return;
      }
      try {
        thrift.stop();
      } catch (Throwable t) {
        // best effort on the way out
      }
      try {
        rest.stop();
      } catch (Throwable t) {
        // best effort on the way out
      }
      try {
        util.shutdownMiniCluster();
      } catch (Throwable t) {
        // best effort on the way out
      }
      delete(base);
    };
    Runtime.getRuntime().addShutdownHook(new Thread(shutdown));

    System.out.println("Ready! rest=" + rest.port + " thrift=" + thriftPort + " zk=" + zk);
    System.out.flush();

    BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
    PrintWriter out = new PrintWriter(System.out, true);
    String line;
    while ((line = in.readLine()) != null && !line.trim().isEmpty()) {
      try {
        out.println("ok " + command(rest, line.trim().split("\\s+")));
      } catch (Throwable t) {
        out.println("error " + t.toString().replace('\n', ' '));
      }
    }
    shutdown.run();
    System.exit(0);
  }

  private static String command(Rest rest, String[] w) throws Exception {
    switch (w[0]) {
      case "stop-rest":
        rest.stop();
        return "";
      case "start-rest":
        rest.start(rest.port);
        return Integer.toString(rest.port);
      case "pause-rest": {
        long ms = Long.parseLong(w[1]);
        Pause.until = System.nanoTime() + ms * 1_000_000L;
        return "";
      }
      default:
        throw new IllegalArgumentException("unknown command " + w[0]);
    }
  }

  /** The REST gateway: stopped and started again on the port it first got. */
  private static final class Rest {
    private final Configuration conf;
    private RESTServer server;
    int port;

    Rest(Configuration conf) {
      this.conf = conf;
    }

    synchronized void start(int onPort) throws Exception {
      if (server != null) {
        throw new IllegalStateException("the REST gateway is running");
      }
      Configuration c = new Configuration(conf);
      c.set("hbase.rest.host", "127.0.0.1");
      c.setInt("hbase.rest.port", onPort);
      c.setInt("hbase.rest.info.port", -1);
      c.setInt("hbase.rest.threads.min", 2);
      c.set("hbase.rest.filter.classes", GzipFilter.class.getName() + "," + Pause.class.getName());
      RESTServer s = new RESTServer(c);
      s.run();
      server = s;
      port = s.getPort();
    }

    synchronized void stop() throws Exception {
      if (server == null) {
        throw new IllegalStateException("the REST gateway is not running");
      }
      RESTServer s = server;
      server = null;
      s.stop();
    }
  }

  /** Holds every REST request while a {@code pause-rest} lasts. */
  public static final class Pause implements Filter {
    static volatile long until = System.nanoTime();

    @Override
    public void init(FilterConfig config) {}

    @Override
    public void doFilter(ServletRequest req, ServletResponse resp, FilterChain chain)
        throws IOException, ServletException {
      long left;
      while ((left = until - System.nanoTime()) > 0) {
        try {
          Thread.sleep(Math.max(1, left / 1_000_000L));
        } catch (InterruptedException e) {
          Thread.currentThread().interrupt();
          throw new ServletException(e);
        }
      }
      chain.doFilter(req, resp);
    }

    @Override
    public void destroy() {}
  }

  private static int freePort() throws IOException {
    try (ServerSocket s = new ServerSocket(0, 1, java.net.InetAddress.getLoopbackAddress())) {
      return s.getLocalPort();
    }
  }

  /** Wait (at most two minutes) until something accepts connections on 127.0.0.1:port. */
  private static void awaitListening(int port, Thread server) throws Exception {
    long deadline = System.nanoTime() + 120_000_000_000L;
    while (true) {
      try (Socket s = new Socket()) {
        s.connect(new InetSocketAddress("127.0.0.1", port), 1000);
        return;
      } catch (IOException e) {
        if (!server.isAlive() || System.nanoTime() > deadline) {
          throw new IllegalStateException("the Thrift gateway did not listen on " + port, e);
        }
        Thread.sleep(50);
      }
    }
  }

  private static void delete(File dir) {
    try (Stream<java.nio.file.Path> walk = Files.walk(dir.toPath())) {
      walk.sorted(Comparator.reverseOrder()).forEach(p -> p.toFile().delete());
    } catch (IOException e) {
      // a leftover temporary directory is no reason to fail
    }
  }
}
