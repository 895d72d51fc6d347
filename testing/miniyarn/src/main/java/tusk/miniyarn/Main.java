package tusk.miniyarn;

import java.io.File;
import java.io.FileOutputStream;
import java.net.ServerSocket;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.Properties;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.stream.Stream;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.hdfs.DFSConfigKeys;
import org.apache.hadoop.hdfs.MiniDFSCluster;
import org.apache.hadoop.minikdc.MiniKdc;
import org.apache.hadoop.security.UserGroupInformation;
import org.apache.hadoop.yarn.conf.YarnConfiguration;
import org.apache.hadoop.yarn.server.MiniYARNCluster;
import org.apache.hadoop.yarn.server.nodemanager.NodeManager;
import org.apache.hadoop.yarn.util.resource.ResourceUtils;

/**
 * A YARN cluster for tusk's tests.
 *
 * <p>{@code rm NODES GPUS}: starts a MiniYARNCluster with no NodeManager in this JVM (with
 * NodeManagers in the same JVM every {@code /ws/v1/cluster/*} REST call answers 404: their
 * webapps share Guice's static filter), then NODES NodeManager JVMs of their own (this class
 * with {@code nm}), each declaring GPUS {@code yarn.io/gpu} devices when GPUS &gt; 0 (a countable
 * resource: no device needs to exist). Prints {@code Ready! rm=http://HOST:PORT} once every
 * NodeManager has registered, and stops everything when stdin closes or receives a line.
 *
 * <p>{@code rm NODES GPUS kerberos DIR}: the same, with the ResourceManager's web server (its UI
 * and the REST API) behind Hadoop's SPNEGO filter ({@code AuthenticationFilterInitializer},
 * {@code hadoop.http.authentication.type=kerberos}). A MiniKdc (Apache Kerby) runs in this JVM;
 * DIR receives {@code krb5.conf} (for MIT's tools and libraries: TCP to the KDC, no DNS
 * canonicalization), {@code http.keytab} ({@code HTTP/localhost}, the server's) and
 * {@code tusk.keytab} (the user {@code tusk}). The Ready line adds {@code krb5=… realm=…
 * principal=… keytab=…}. YARN's RPC stays unsecured ({@code hadoop.security.authentication}
 * is {@code simple}): only HTTP asks for Kerberos.
 *
 * <p>{@code rm NODES GPUS secure DIR}: everything behind Kerberos
 * ({@code hadoop.security.authentication=kerberos}), with a MiniDFSCluster (one DataNode) in
 * this JVM beside the ResourceManager. One service principal, {@code hdfs/localhost}
 * ({@code DIR/hdfs.keytab}), runs the NameNode, the DataNode, the ResourceManager (which does
 * not log in itself: it runs as this JVM's login user, the NameNode's) and the NodeManagers;
 * {@code HTTP/localhost} ({@code DIR/http.keytab}) answers SPNEGO on the ResourceManager's web
 * server and on WebHDFS; the user is {@code tusk} as above. HDFS as in a secure test cluster:
 * block access tokens, SASL on data transfer ({@code dfs.data.transfer.protection=
 * authentication}) instead of privileged ports. Delegation tokens for the renewer
 * {@code hdfs/localhost@REALM} can be renewed by the ResourceManager (same JVM, same
 * configuration). The configuration directory ({@code conf=}) holds core-site.xml,
 * hdfs-site.xml and yarn-site.xml with what a client, an application master or a container
 * needs; the NodeManagers load it and pass it to their containers as {@code HADOOP_CONF_DIR}.
 * The Ready line adds {@code hdfs=hdfs://localhost:PORT webhdfs=localhost:PORT}.
 *
 * <p>{@code nm RM_ADDRESS SCHEDULER TRACKER GPUS DIR [CONF_DIR KEYTAB]}: one NodeManager; with
 * CONF_DIR and KEYTAB a secured one (loads CONF_DIR/yarn-site.xml, logs in as
 * {@code yarn.nodemanager.principal} from KEYTAB). Stops when stdin closes.
 */
public final class Main {
  private Main() {}

  private static void common(Configuration conf, int gpus) {
    conf.setInt("yarn.scheduler.minimum-allocation-mb", 128);
    conf.setInt("yarn.scheduler.maximum-allocation-mb", 2048);
    conf.setInt("yarn.scheduler.maximum-allocation-vcores", 4);
    conf.setBoolean("yarn.nodemanager.vmem-check-enabled", false);
    conf.setBoolean("yarn.nodemanager.pmem-check-enabled", false);
    conf.setFloat(
        "yarn.nodemanager.disk-health-checker.max-disk-utilization-per-disk-percentage", 100f);
    conf.setBoolean("yarn.log-aggregation-enable", false);
    if (gpus > 0) {
      conf.set("yarn.resource-types", "yarn.io/gpu");
      ResourceUtils.resetResourceTypes(conf);
    }
  }

  private static int freePort() throws Exception {
    try (ServerSocket s = new ServerSocket(0)) {
      return s.getLocalPort();
    }
  }

  public static void main(String[] args) throws Exception {
    if (args.length > 0 && args[0].equals("nm")) {
      nodeManager(args);
    } else {
      resourceManager(args);
    }
  }

  private static void resourceManager(String[] args) throws Exception {
    int nodes = args.length > 1 ? Integer.parseInt(args[1]) : 2;
    int gpus = args.length > 2 ? Integer.parseInt(args[2]) : 0;
    String mode = args.length > 4 ? args[3] : "";
    boolean secure = mode.equals("secure");
    File krbDir = mode.equals("kerberos") || secure ? new File(args[4]) : null;
    File base = Files.createTempDirectory("tusk-miniyarn").toFile();
    // Secure: one base configuration for HDFS and YARN (UserGroupInformation is static per JVM:
    // a configuration without the Kerberos keys would switch it back to simple).
    Configuration secureBase = secure ? new Configuration() : null;
    MiniKdc kdc = null;
    String kerberosReady = "";
    String realm = null;
    File hdfsKeytab = null;
    File krb5Conf = null;
    Properties httpAuth = new Properties();
    if (krbDir != null) {
      krbDir.mkdirs();
      Properties kdcConf = MiniKdc.createConf();
      kdcConf.setProperty(MiniKdc.KDC_BIND_ADDRESS, "localhost");
      File kdcDir = new File(krbDir, "kdc");
      kdcDir.mkdirs();
      kdc = new MiniKdc(kdcConf, kdcDir);
      kdc.start();
      realm = kdc.getRealm();
      File httpKeytab = new File(krbDir, "http.keytab");
      File userKeytab = new File(krbDir, "tusk.keytab");
      kdc.createPrincipal(httpKeytab, "HTTP/localhost");
      kdc.createPrincipal(userKeytab, "tusk");
      if (secure) {
        hdfsKeytab = new File(krbDir, "hdfs.keytab");
        kdc.createPrincipal(hdfsKeytab, "hdfs/localhost");
      }
      // MIT's client: TCP only (the KDC does not listen on UDP), and the service host taken
      // as written (HTTP/localhost), not canonicalized through DNS.
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
      krb5Conf = new File(krbDir, "krb5.conf");
      Files.writeString(krb5Conf.toPath(), krb5);
      // SPNEGO on the ResourceManager's web server (secure: the NameNode's too, see below; never
      // the NodeManagers').
      httpAuth.setProperty("hadoop.http.filter.initializers",
          "org.apache.hadoop.security.AuthenticationFilterInitializer");
      httpAuth.setProperty("hadoop.http.authentication.type", "kerberos");
      httpAuth.setProperty("hadoop.http.authentication.simple.anonymous.allowed", "false");
      httpAuth.setProperty(
          "hadoop.http.authentication.kerberos.principal", "HTTP/localhost@" + realm);
      httpAuth.setProperty(
          "hadoop.http.authentication.kerberos.keytab", httpKeytab.getAbsolutePath());
      httpAuth.setProperty("hadoop.http.authentication.kerberos.name.rules", "DEFAULT");
      if (secure) {
        String service = "hdfs/localhost@" + realm;
        String http = "HTTP/localhost@" + realm;
        secureBase.set("hadoop.security.authentication", "kerberos");
        secureBase.setBoolean("hadoop.security.authorization", false);
        secureBase.set("hadoop.rpc.protection", "authentication");
        // HDFS as in a secure test cluster: block tokens and SASL on data transfer instead of
        // privileged ports.
        secureBase.setBoolean(DFSConfigKeys.DFS_BLOCK_ACCESS_TOKEN_ENABLE_KEY, true);
        secureBase.setBoolean(DFSConfigKeys.IGNORE_SECURE_PORTS_FOR_TESTING_KEY, true);
        secureBase.set(DFSConfigKeys.DFS_DATA_TRANSFER_PROTECTION_KEY, "authentication");
        secureBase.set(DFSConfigKeys.DFS_NAMENODE_KERBEROS_PRINCIPAL_KEY, service);
        secureBase.set(DFSConfigKeys.DFS_NAMENODE_KEYTAB_FILE_KEY, hdfsKeytab.getAbsolutePath());
        secureBase.set(DFSConfigKeys.DFS_DATANODE_KERBEROS_PRINCIPAL_KEY, service);
        secureBase.set(DFSConfigKeys.DFS_DATANODE_KEYTAB_FILE_KEY, hdfsKeytab.getAbsolutePath());
        // SPNEGO on the NameNode's web server (WebHDFS).
        secureBase.setBoolean("dfs.webhdfs.enabled", true);
        secureBase.set(DFSConfigKeys.DFS_WEB_AUTHENTICATION_KERBEROS_PRINCIPAL_KEY, http);
        secureBase.set(DFSConfigKeys.DFS_WEB_AUTHENTICATION_KERBEROS_KEYTAB_KEY,
            httpKeytab.getAbsolutePath());
        secureBase.set(DFSConfigKeys.DFS_NAMENODE_KERBEROS_INTERNAL_SPNEGO_PRINCIPAL_KEY, http);
        // YARN: the ResourceManager runs as the NameNode's login user; the NodeManagers log in
        // with the same principal in their JVMs.
        secureBase.set(YarnConfiguration.RM_PRINCIPAL, service);
        secureBase.set(YarnConfiguration.NM_PRINCIPAL, service);
        secureBase.set(YarnConfiguration.RM_WEBAPP_SPNEGO_USER_NAME_KEY, http);
        secureBase.set(YarnConfiguration.RM_WEBAPP_SPNEGO_KEYTAB_FILE_KEY,
            httpKeytab.getAbsolutePath());
        UserGroupInformation.setConfiguration(secureBase);
      }
      kerberosReady = " krb5=" + krb5Conf.getAbsolutePath() + " realm=" + realm
          + " principal=tusk@" + realm + " keytab=" + userKeytab.getAbsolutePath();
    }
    MiniDFSCluster dfs = null;
    String hdfsReady = "";
    String hdfsUri = null;
    String webHdfs = null;
    if (secure) {
      Configuration dfsConf = new Configuration(secureBase);
      dfsConf.set(MiniDFSCluster.HDFS_MINIDFS_BASEDIR, new File(base, "dfs").getAbsolutePath());
      // Tests write as whatever user they are; permissions would only get in the way.
      dfsConf.setBoolean(DFSConfigKeys.DFS_PERMISSIONS_ENABLED_KEY, false);
      dfsConf.set(DFSConfigKeys.DFS_NAMENODE_HTTP_ADDRESS_KEY, "127.0.0.1:0");
      dfsConf.set(DFSConfigKeys.DFS_DATANODE_HTTP_ADDRESS_KEY, "127.0.0.1:0");
      dfsConf.setInt(DFSConfigKeys.DFS_REPLICATION_KEY, 1);
      // 1 MB blocks, as testing/minidfs, so that tests exercise multi-block files.
      dfsConf.setLong(DFSConfigKeys.DFS_BLOCK_SIZE_KEY, 1024 * 1024);
      dfsConf.setLong(DFSConfigKeys.DFS_NAMENODE_MIN_BLOCK_SIZE_KEY, 1024);
      // The NameNode's web server always authenticates with HDFS's AuthFilterInitializer, which
      // reads hadoop.http.authentication.* (core-default.xml says simple): SPNEGO as on the
      // ResourceManager. The initializers list itself stays unset (the DataNode's web server
      // would use it too).
      for (String key : httpAuth.stringPropertyNames()) {
        if (!key.equals("hadoop.http.filter.initializers")) {
          dfsConf.set(key, httpAuth.getProperty(key));
        }
      }
      dfs = new MiniDFSCluster.Builder(dfsConf).numDataNodes(1).nameNodePort(0).build();
      dfs.waitActive();
      int rpcPort = dfs.getNameNodePort();
      int httpPort = dfs.getNameNode().getHttpAddress().getPort();
      hdfsUri = "hdfs://localhost:" + rpcPort;
      webHdfs = "localhost:" + httpPort;
      hdfsReady = " hdfs=" + hdfsUri + " webhdfs=" + webHdfs;
      secureBase.set("fs.defaultFS", hdfsUri);
      secureBase.setInt(DFSConfigKeys.DFS_REPLICATION_KEY, 1);
      secureBase.setLong(DFSConfigKeys.DFS_BLOCK_SIZE_KEY, 1024 * 1024);
      secureBase.setLong(DFSConfigKeys.DFS_NAMENODE_MIN_BLOCK_SIZE_KEY, 1024);
      secureBase.set(DFSConfigKeys.DFS_NAMENODE_RPC_ADDRESS_KEY, "localhost:" + rpcPort);
      secureBase.set(DFSConfigKeys.DFS_NAMENODE_HTTP_ADDRESS_KEY, webHdfs);
    }
    YarnConfiguration conf = secure ? new YarnConfiguration(secureBase) : new YarnConfiguration();
    common(conf, gpus);
    for (String key : httpAuth.stringPropertyNames()) {
      conf.set(key, httpAuth.getProperty(key));
    }
    if (krbDir != null) {
      conf.set(YarnConfiguration.RM_WEBAPP_ADDRESS, "localhost:0");
    }
    conf.set("yarn.resourcemanager.scheduler.class",
        "org.apache.hadoop.yarn.server.resourcemanager.scheduler.capacity.CapacityScheduler");
    conf.set("yarn.scheduler.capacity.root.queues", "default");
    conf.set("yarn.scheduler.capacity.root.default.capacity", "100");
    conf.set("yarn.scheduler.capacity.maximum-am-resource-percent", "0.5");
    // Memory alone would ignore GPUs when placing containers.
    conf.set("yarn.scheduler.capacity.resource-calculator",
        "org.apache.hadoop.yarn.util.resource.DominantResourceCalculator");
    MiniYARNCluster cluster = new MiniYARNCluster("tusk", 0, 1, 1);
    MiniKdc kdcToStop = kdc;
    MiniDFSCluster dfsToStop = dfs;
    cluster.init(conf);
    cluster.start();
    Configuration live = cluster.getConfig();
    String rm = live.get(YarnConfiguration.RM_ADDRESS);
    String scheduler = live.get(YarnConfiguration.RM_SCHEDULER_ADDRESS);
    String tracker = live.get(YarnConfiguration.RM_RESOURCE_TRACKER_ADDRESS);
    String web = live.get(YarnConfiguration.RM_WEBAPP_ADDRESS);

    String java = System.getProperty("java.home") + "/bin/java";
    List<Process> nms = new ArrayList<>();
    AtomicBoolean stopped = new AtomicBoolean();
    Runnable stop = () -> {
      if (stopped.getAndSet(true)) {
        return;
      }
      for (Process p : nms) {
        try {
          p.getOutputStream().close();
        } catch (Exception e) {
          // already gone
        }
      }
      for (Process p : nms) {
        try {
          if (!p.waitFor(20, TimeUnit.SECONDS)) {
            p.destroyForcibly();
          }
        } catch (Exception e) {
          p.destroyForcibly();
        }
      }
      try {
        cluster.stop();
      } catch (Throwable t) {
        // best effort on the way out
      }
      if (dfsToStop != null) {
        try {
          dfsToStop.shutdown(true);
        } catch (Throwable t) {
          // best effort on the way out
        }
      }
      if (kdcToStop != null) {
        kdcToStop.stop();
      }
      // The NodeManagers' directories and the configuration: nothing of a run is kept.
      try (Stream<Path> files = Files.walk(base.toPath())) {
        files.sorted(Comparator.reverseOrder()).forEach(f -> f.toFile().delete());
      } catch (Exception e) {
        // best effort on the way out
      }
    };
    Runtime.getRuntime().addShutdownHook(new Thread(stop));
    // What a cluster's HADOOP_CONF_DIR gives an application master: the ResourceManager's
    // addresses (and the resource types). Tests put this directory first on its CLASSPATH.
    // Secure: also everything a client, an application master or a container needs for
    // Kerberos and HDFS, as core-site.xml, hdfs-site.xml and yarn-site.xml alike.
    File confDir = new File(base, "conf");
    confDir.mkdirs();
    Configuration amConf = new Configuration(false);
    amConf.set(YarnConfiguration.RM_ADDRESS, rm);
    amConf.set(YarnConfiguration.RM_SCHEDULER_ADDRESS, scheduler);
    amConf.set(YarnConfiguration.RM_RESOURCE_TRACKER_ADDRESS, tracker);
    amConf.set(YarnConfiguration.RM_WEBAPP_ADDRESS, web);
    if (gpus > 0) {
      amConf.set("yarn.resource-types", "yarn.io/gpu");
    }
    if (secure) {
      for (String key : new String[] {
          "fs.defaultFS",
          "hadoop.security.authentication",
          "hadoop.security.authorization",
          "hadoop.rpc.protection",
          DFSConfigKeys.DFS_BLOCK_ACCESS_TOKEN_ENABLE_KEY,
          DFSConfigKeys.DFS_DATA_TRANSFER_PROTECTION_KEY,
          DFSConfigKeys.DFS_NAMENODE_KERBEROS_PRINCIPAL_KEY,
          DFSConfigKeys.DFS_DATANODE_KERBEROS_PRINCIPAL_KEY,
          DFSConfigKeys.DFS_NAMENODE_RPC_ADDRESS_KEY,
          DFSConfigKeys.DFS_NAMENODE_HTTP_ADDRESS_KEY,
          DFSConfigKeys.DFS_WEB_AUTHENTICATION_KERBEROS_PRINCIPAL_KEY,
          DFSConfigKeys.DFS_REPLICATION_KEY,
          DFSConfigKeys.DFS_BLOCK_SIZE_KEY,
          "dfs.webhdfs.enabled",
          YarnConfiguration.RM_PRINCIPAL,
          YarnConfiguration.NM_PRINCIPAL}) {
        amConf.set(key, secureBase.get(key));
      }
    }
    for (String name : secure
        ? new String[] {"core-site.xml", "hdfs-site.xml", "yarn-site.xml"}
        : new String[] {"yarn-site.xml"}) {
      try (FileOutputStream out = new FileOutputStream(new File(confDir, name))) {
        amConf.writeXml(out);
      }
    }
    for (int i = 0; i < nodes; i++) {
      File dir = new File(base, "nm-" + i);
      // Secured: the configuration directory first on the classpath, as on a real node. The
      // NodeManager's localizer runs in a JVM of its own with this classpath, and reads HDFS's
      // client settings (SASL on data transfer) from it.
      String classpath = secure
          ? confDir.getAbsolutePath() + File.pathSeparator + System.getProperty("java.class.path")
          : System.getProperty("java.class.path");
      List<String> command = new ArrayList<>(List.of(java, "-cp", classpath, "--add-opens",
          "java.base/java.lang=ALL-UNNAMED"));
      if (secure) {
        command.add("-Djava.security.krb5.conf=" + krb5Conf.getAbsolutePath());
      }
      command.addAll(List.of(Main.class.getName(), "nm", rm, scheduler, tracker,
          Integer.toString(gpus), dir.getAbsolutePath()));
      if (secure) {
        command.add(confDir.getAbsolutePath());
        command.add(hdfsKeytab.getAbsolutePath());
      }
      ProcessBuilder pb = new ProcessBuilder(command);
      pb.environment().put("JAVA_HOME", System.getProperty("java.home"));
      if (secure) {
        // In YARN's default whitelist: the containers inherit it (and find Kerberos and HDFS).
        pb.environment().put("HADOOP_CONF_DIR", confDir.getAbsolutePath());
      }
      pb.redirectOutput(ProcessBuilder.Redirect.DISCARD);
      pb.redirectError(ProcessBuilder.Redirect.INHERIT);
      nms.add(pb.start());
    }
    long deadline = System.currentTimeMillis() + 180_000;
    while (cluster.getResourceManager().getRMContext().getRMNodes().size() < nodes) {
      if (System.currentTimeMillis() > deadline) {
        System.err.println("NodeManagers did not register within 180 s");
        System.exit(1);
      }
      for (Process p : nms) {
        if (!p.isAlive()) {
          System.err.println("a NodeManager exited with " + p.exitValue());
          System.exit(1);
        }
      }
      Thread.sleep(200);
    }
    System.out.println("Ready! rm=http://" + web + " conf=" + confDir.getAbsolutePath()
        + " nodes=" + nodes + " gpus=" + gpus + kerberosReady + hdfsReady);
    System.out.flush();
    System.in.read();
    // Stop here rather than in the shutdown hook, where HDFS's own hooks can no longer be
    // removed.
    stop.run();
    System.exit(0);
  }

  private static void nodeManager(String[] args) throws Exception {
    YarnConfiguration conf = new YarnConfiguration();
    int gpus = Integer.parseInt(args[4]);
    if (args.length > 7) {
      // Secured: the cluster's configuration (Kerberos, HDFS, principals) and our keytab.
      conf.addResource(new File(args[6], "yarn-site.xml").toURI().toURL());
      conf.set(YarnConfiguration.NM_KEYTAB, args[7]);
      UserGroupInformation.setConfiguration(conf);
    }
    common(conf, gpus);
    File dir = new File(args[5]);
    File local = new File(dir, "local");
    File logs = new File(dir, "logs");
    local.mkdirs();
    logs.mkdirs();
    conf.set(YarnConfiguration.RM_ADDRESS, args[1]);
    conf.set(YarnConfiguration.RM_SCHEDULER_ADDRESS, args[2]);
    conf.set(YarnConfiguration.RM_RESOURCE_TRACKER_ADDRESS, args[3]);
    conf.set(YarnConfiguration.NM_ADDRESS, "127.0.0.1:0");
    conf.set(YarnConfiguration.NM_LOCALIZER_ADDRESS, "127.0.0.1:" + freePort());
    conf.set(YarnConfiguration.NM_WEBAPP_ADDRESS, "127.0.0.1:0");
    conf.set(YarnConfiguration.NM_COLLECTOR_SERVICE_ADDRESS, "127.0.0.1:0");
    conf.set(YarnConfiguration.NM_LOCAL_DIRS, local.getAbsolutePath());
    conf.set(YarnConfiguration.NM_LOG_DIRS, logs.getAbsolutePath());
    conf.setInt(YarnConfiguration.NM_PMEM_MB, 4096);
    conf.setInt(YarnConfiguration.NM_VCORES, 4);
    if (gpus > 0) {
      conf.setLong("yarn.nodemanager.resource-type.yarn.io/gpu", gpus);
    }
    NodeManager nm = new NodeManager();
    nm.init(conf);
    nm.start();
    Runtime.getRuntime().addShutdownHook(new Thread(() -> {
      try {
        nm.stop();
      } catch (Throwable t) {
        // best effort on the way out
      }
    }));
    // The ResourceManager's JVM closing our stdin (or dying) stops this NodeManager.
    while (System.in.read() != -1) {
      // ignore input
    }
    System.exit(0);
  }
}
