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
import java.util.Properties;
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
import org.apache.hadoop.hbase.security.UserProvider;
import org.apache.hadoop.hbase.thrift.ThriftServer;
import org.apache.hadoop.minikdc.MiniKdc;

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
 *
 * <p>Program arguments {@code kerberos DIR}: the REST gateway, and only it, requires Kerberos
 * (SPNEGO), with HBase's own {@code AuthFilter} ({@code hbase.rest.authentication.type=kerberos},
 * the service principal {@code HTTP/localhost}). A MiniKdc (Apache Kerby) runs in this JVM; DIR
 * receives {@code krb5.conf} (for MIT's tools and libraries: TCP to the KDC, no DNS
 * canonicalization), {@code http.keytab} ({@code HTTP/localhost}, the gateway's) and
 * {@code tusk.keytab} (the user {@code tusk}), as in {@code testing/miniyarn}'s kerberos mode. The
 * Ready line adds {@code krb5=… realm=… principal=… keytab=…}. Clients must name the gateway
 * {@code localhost} (the host in the service principal). The cluster, its RPC and the Thrift
 * gateway stay unsecured; see {@link RestKerberosOnly} for how the gateway is told otherwise.
 */
public final class Main {
  private Main() {}

  public static void main(String[] args) throws Exception {
    File krbDir = args.length > 1 && args[0].equals("kerberos") ? new File(args[1]) : null;
    if (args.length > 0 && krbDir == null) {
      throw new IllegalArgumentException("usage: Main [kerberos DIR]");
    }
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
    MiniKdc kdc = null;
    Properties restAuth = new Properties();
    String kerberosReady = "";
    if (krbDir != null) {
      krbDir.mkdirs();
      Properties kdcConf = MiniKdc.createConf();
      kdcConf.setProperty(MiniKdc.KDC_BIND_ADDRESS, "localhost");
      File kdcDir = new File(krbDir, "kdc");
      kdcDir.mkdirs();
      kdc = new MiniKdc(kdcConf, kdcDir);
      kdc.start();
      String realm = kdc.getRealm();
      File httpKeytab = new File(krbDir, "http.keytab");
      File userKeytab = new File(krbDir, "tusk.keytab");
      kdc.createPrincipal(httpKeytab, "HTTP/localhost");
      kdc.createPrincipal(userKeytab, "tusk");
      // MIT's client: TCP only (the KDC does not listen on UDP), and the service host taken as
      // written (HTTP/localhost), not canonicalized through DNS.
      String krb5 = "[libdefaults]\n"
          + "  default_realm = " + realm + "\n"
          + "  dns_lookup_kdc = false\n"
          + "  dns_lookup_realm = false\n"
          + "  dns_canonicalize_hostname = false\n"
          + "  rdns = false\n"
          + "  udp_preference_limit = 1\n"
          + "[realms]\n"
          + "  " + realm + " = {\n"
          + "    kdc = " + kdc.getHost() + ":" + kdc.getPort() + "\n"
          + "  }\n"
          + "[domain_realm]\n"
          + "  localhost = " + realm + "\n";
      File krb5Conf = new File(krbDir, "krb5.conf");
      Files.writeString(krb5Conf.toPath(), krb5);
      String http = "HTTP/localhost@" + realm;
      // RESTServer puts its AuthFilter in front of every resource only when security is on
      // (see RestKerberosOnly), and then wants a keytab and principal of its own: the HTTP ones
      // (it logs in with them only where Hadoop's RPC is secured, which it is not here).
      restAuth.setProperty("hbase.rest.keytab.file", httpKeytab.getAbsolutePath());
      restAuth.setProperty("hbase.rest.kerberos.principal", http);
      restAuth.setProperty(RESTServer.SKIP_LOGIN_KEY, "true");
      // The filter: hadoop-auth's KerberosAuthenticationHandler (SPNEGO) with this key, its
      // signed hadoop.auth cookie afterwards.
      restAuth.setProperty("hbase.rest.authentication.type", "kerberos");
      restAuth.setProperty("hbase.rest.authentication.kerberos.principal", http);
      restAuth.setProperty(
          "hbase.rest.authentication.kerberos.keytab", httpKeytab.getAbsolutePath());
      restAuth.setProperty("hbase.rest.authentication.kerberos.name.rules", "DEFAULT");
      kerberosReady = " krb5=" + krb5Conf.getAbsolutePath() + " realm=" + realm
          + " principal=tusk@" + realm + " keytab=" + userKeytab.getAbsolutePath();
    }
    Rest rest = new Rest(gateways, restAuth);
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
    MiniKdc kdcToStop = kdc;
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
      if (kdcToStop != null) {
        kdcToStop.stop();
      }
      delete(base);
    };
    Runtime.getRuntime().addShutdownHook(new Thread(shutdown));

    System.out.println(
        "Ready! rest=" + rest.port + " thrift=" + thriftPort + " zk=" + zk + kerberosReady);
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

  /**
   * The REST gateway: stopped and started again on the port it first got; behind SPNEGO when
   * {@code auth} holds the {@code hbase.rest.*} Kerberos settings.
   */
  private static final class Rest {
    private final Configuration conf;
    private final Properties auth;
    private RESTServer server;
    int port;

    Rest(Configuration conf, Properties auth) {
      this.conf = conf;
      this.auth = auth;
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
      for (String key : auth.stringPropertyNames()) {
        c.set(key, auth.getProperty(key));
      }
      if (!auth.isEmpty()) {
        UserProvider.setUserProviderForTesting(c, RestKerberosOnly.class);
      }
      RESTServer s = new RESTServer(c);
      // Only the RESTServer just made has that provider: the gateway's HBase connections
      // (made from this same configuration) get the plain one, and stay unsecured.
      c.unset(USER_PROVIDER_KEY);
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

  /** Where {@link UserProvider#instantiate} finds the provider class. */
  private static final String USER_PROVIDER_KEY = "hbase.client.userprovider.class";

  /**
   * The REST gateway's user provider in the kerberos mode. HBase's RESTServer installs its
   * SPNEGO filter ({@code AuthFilter}, configured by {@code hbase.rest.authentication.*}) only
   * when its provider says that both Hadoop's security ({@code UserGroupInformation}: JVM-wide,
   * RPC included) and HBase's ({@code hbase.security.authentication=kerberos}: the gateway's own
   * RPC to the region servers) are Kerberos, as in a fully secured deployment. Here the cluster
   * and its RPC are not secured, so this provider says yes to both questions for the gateway
   * alone: the filter is installed and the cluster behind it stays as it is. What a client sees
   * of the gateway, a 401 with {@code WWW-Authenticate: Negotiate}, the SPNEGO exchange and the
   * {@code hadoop.auth} cookie, is HBase's and hadoop-auth's own code, unchanged.
   */
  public static final class RestKerberosOnly extends UserProvider {
    @Override
    public boolean isHadoopSecurityEnabled() {
      return true;
    }

    @Override
    public boolean isHBaseSecurityEnabled() {
      return true;
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
