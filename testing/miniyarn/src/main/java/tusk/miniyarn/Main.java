package tusk.miniyarn;

import java.io.File;
import java.net.ServerSocket;
import java.nio.file.Files;
import java.util.ArrayList;
import java.util.List;
import java.util.Properties;
import java.util.concurrent.TimeUnit;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.minikdc.MiniKdc;
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
 * <p>{@code nm RM_ADDRESS SCHEDULER TRACKER GPUS DIR}: one NodeManager; stops when stdin closes.
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
    File krbDir = args.length > 4 && args[3].equals("kerberos") ? new File(args[4]) : null;
    File base = Files.createTempDirectory("tusk-miniyarn").toFile();
    YarnConfiguration conf = new YarnConfiguration();
    common(conf, gpus);
    MiniKdc kdc = null;
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
      File krb5Conf = new File(krbDir, "krb5.conf");
      Files.writeString(krb5Conf.toPath(), krb5);
      conf.set("hadoop.http.filter.initializers",
          "org.apache.hadoop.security.AuthenticationFilterInitializer");
      conf.set("hadoop.http.authentication.type", "kerberos");
      conf.set("hadoop.http.authentication.simple.anonymous.allowed", "false");
      conf.set("hadoop.http.authentication.kerberos.principal", "HTTP/localhost@" + realm);
      conf.set("hadoop.http.authentication.kerberos.keytab", httpKeytab.getAbsolutePath());
      conf.set("hadoop.http.authentication.kerberos.name.rules", "DEFAULT");
      conf.set(YarnConfiguration.RM_WEBAPP_ADDRESS, "localhost:0");
      kerberosReady = " krb5=" + krb5Conf.getAbsolutePath() + " realm=" + realm
          + " principal=tusk@" + realm + " keytab=" + userKeytab.getAbsolutePath();
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
    cluster.init(conf);
    cluster.start();
    Configuration live = cluster.getConfig();
    String rm = live.get(YarnConfiguration.RM_ADDRESS);
    String scheduler = live.get(YarnConfiguration.RM_SCHEDULER_ADDRESS);
    String tracker = live.get(YarnConfiguration.RM_RESOURCE_TRACKER_ADDRESS);
    String web = live.get(YarnConfiguration.RM_WEBAPP_ADDRESS);

    String java = System.getProperty("java.home") + "/bin/java";
    List<Process> nms = new ArrayList<>();
    Runnable stop = () -> {
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
      if (kdcToStop != null) {
        kdcToStop.stop();
      }
    };
    Runtime.getRuntime().addShutdownHook(new Thread(stop));
    for (int i = 0; i < nodes; i++) {
      File dir = new File(base, "nm-" + i);
      ProcessBuilder pb = new ProcessBuilder(java, "-cp", System.getProperty("java.class.path"),
          "--add-opens", "java.base/java.lang=ALL-UNNAMED", Main.class.getName(), "nm", rm,
          scheduler, tracker, Integer.toString(gpus), dir.getAbsolutePath());
      pb.environment().put("JAVA_HOME", System.getProperty("java.home"));
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
    // What a cluster's HADOOP_CONF_DIR gives an application master: the ResourceManager's
    // addresses (and the resource types). Tests put this directory first on its CLASSPATH.
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
    try (java.io.FileOutputStream out = new java.io.FileOutputStream(new File(confDir, "yarn-site.xml"))) {
      amConf.writeXml(out);
    }
    System.out.println("Ready! rm=http://" + web + " conf=" + confDir.getAbsolutePath()
        + " nodes=" + nodes + " gpus=" + gpus + kerberosReady);
    System.out.flush();
    System.in.read();
    System.exit(0);
  }

  private static void nodeManager(String[] args) throws Exception {
    YarnConfiguration conf = new YarnConfiguration();
    int gpus = Integer.parseInt(args[4]);
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
